//! The Windows counterparts of `sys.rs`: file identity, the disk and volume
//! ioctls the safe standard library does not offer, and volume locking.
//! Every `unsafe` block of the crate's Windows build is here; the ioctl output
//! buffers are decoded by the safe, platform-independent `winioctl.rs`.
//!
//! Disks are `\\.\PhysicalDriveN`. Facts come from
//! IOCTL_STORAGE_QUERY_PROPERTY (vendor, product, serial, bus, removable,
//! sector sizes, seek penalty), IOCTL_DISK_GET_DRIVE_GEOMETRY_EX (size),
//! IOCTL_DISK_IS_WRITABLE and IOCTL_STORAGE_GET_DEVICE_NUMBER; queries open the
//! device with no access rights, which needs no administrator rights and
//! disturbs nobody. Volumes are found with FindFirstVolumeW/FindNextVolumeW and
//! placed on disks with IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS; their drive
//! letters and folder mount points come from GetVolumePathNamesForVolumeNameW.
//! The volume holding an open file (an image being read) is named by
//! GetFinalPathNameByHandleW with VOLUME_NAME_GUID and placed on its disks the
//! same way (`disks_holding_file`, used by `exec::lies_on`).
//!
//! Windows mounts every volume it recognises, so a mounted volume alone does not
//! make a disk busy: before writing, every volume on the target is locked
//! (FSCTL_LOCK_VOLUME) and dismounted (FSCTL_DISMOUNT_VOLUME) through handles
//! held for the whole write. The lock fails while anyone has a file open on the
//! volume (the running Windows, a page file, the image being read, a command
//! prompt whose current folder is there), and that failure is the refusal.
//! Since Windows Vista, writes to sectors of a mounted, unlocked volume through
//! the disk handle fail, which this ordering avoids.
//!
//! Deliberately missing: read-ahead hints (Windows takes them only as
//! `FILE_FLAG_SEQUENTIAL_SCAN` when a file is opened, and its cache manager
//! detects sequential reads by itself), advisory locks (targets are opened
//! without write sharing instead, see `TargetDisk::open`), WWNs (no ioctl
//! reports them uniformly; the device identification page would be needed),
//! partition devices (`\\.\HarddiskNPartitionM` are not listed: the engine
//! writes partitions through the whole disk), and dynamic disks / Storage
//! Spaces beyond listing their volumes as users of every disk they span.
//!
//! ## Trying it on real Windows
//!
//! Nothing here has met a real disk yet: the only test bed is Wine, whose
//! `\\.\PhysicalDrive0` answers the device descriptor and geometry but not the
//! alignment or layout queries, and whose volumes report no disk extents. On a
//! WinPE (or Windows in an administrator `cmd.exe`) with a spare USB stick or
//! second disk (PhysicalDrive1 below; check the number first!):
//!
//! ```text
//! rem 1. Listing: every disk with model, serial, size, sector sizes, bus.
//! rem    Compare with Windows' own view. RESCUE_LOG shows which queries failed.
//! rescue.exe disks
//! rescue.exe disks --json > disks.json
//! set RESCUE_LOG=imaging=debug
//! rescue.exe disks
//! set RESCUE_LOG=
//! echo list disk | diskpart
//! wmic diskdrive get Index,Model,SerialNumber,Size,BytesPerSector,InterfaceType
//! rem    (on Windows 11 without wmic: powershell Get-Disk ^| Format-List)
//! rem 2. Volumes: the "busy" lists of the system disk must name C:\ (or the
//! rem    disk holding X:\sources\boot.wim on WinPE booted from disk); a stick
//! rem    with an unused E:\ must show no reasons. Compare with:
//! mountvol
//! rem 3. Refusal: keep a prompt open inside the stick, then plan a write:
//! cd /d E:\
//! rescue.exe restore D:\img\disk.img --to \\.\PhysicalDrive1 --dry-run
//! rem    -> refused, naming E:\ and partition N of PhysicalDrive1 (exit 3).
//! rem 4. Writing: from another folder (cd /d X:\), back up the stick, then
//! rem    restore it back; E: must vanish during the write and return after,
//! rem    without Windows offering to format it.
//! rescue.exe backup disk \\.\PhysicalDrive1 -o D:\img\stick.img
//! rescue.exe restore D:\img\stick.img --to \\.\PhysicalDrive1
//! echo select disk 1 > dp.txt & echo list partition >> dp.txt & diskpart /s dp.txt
//! rem 5. An image stored on the target disk itself must be refused:
//! rescue.exe restore E:\stick.img --to \\.\PhysicalDrive1
//! rem 6. The system disk must be refused whatever is asked:
//! rescue.exe clone \\.\PhysicalDrive1 \\.\PhysicalDrive0 --dry-run
//! rem 7. Universal restore on a disk holding an offline Windows (e.g. a
//! rem    restored system disk, not the running one): its volumes are
//! rem    found by GUID path; the plan names the partition; then apply it.
//! rescue.exe universal-restore \\.\PhysicalDrive1 --for nvme --dry-run
//! rescue.exe restore D:\img\pc.img --to \\.\PhysicalDrive1 --universal --for nvme
//! ```
//!
//! Things to watch: 4Kn disks (logical sector 4096 from
//! StorageAccessAlignmentProperty; older USB bridges fail that query, then
//! DISK_GEOMETRY's BytesPerSector is used), USB card readers without media
//! (left out of the list, not an error), NVMe serials, virtio disks under
//! QEMU (transport "virtio"), and whether
//! opening `\\.\PhysicalDriveN` for writing with read-only sharing fails
//! because a service holds the disk open for writing (then that open needs
//! FILE_SHARE_WRITE too; the volume locks still keep file systems out).
//!
//! Reads and writes that are not whole sectors are handled by construction:
//! raw disk handles refuse an offset, length or buffer address that is not a
//! multiple of the logical sector size (ERROR_INVALID_PARAMETER), so every
//! `SourceDisk`/`TargetDisk` of a raw disk reads and writes through
//! `blockdev::aligned` (bounce buffers, read-modify-write of partial
//! sectors). Linux O_DIRECT has the same rules, and
//! `rescue-tui/tests/direct_io.rs` runs backup, restore and clone through it
//! (`RESCUE_DIRECT_IO=1`) on 512- and 4096-byte-sector loop devices; the
//! layer's unit tests use a disk that refuses every unaligned call. What real
//! Windows could still show: a 4Kn disk whose sector size is misreported
//! (step 1 shows the sizes; with RESCUE_LOG=imaging::blockdev::aligned=trace
//! every request that had to be aligned is logged), and speed (step 4: time
//! the backup; data moves through a bounce copy when the engine's buffer is
//! not sector-aligned).
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::AsRawHandle;
use std::path::{Path, PathBuf};
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    ERROR_FILE_NOT_FOUND, ERROR_INSUFFICIENT_BUFFER, ERROR_MORE_DATA, ERROR_NOT_READY, ERROR_NO_MEDIA_IN_DRIVE, ERROR_NO_MORE_FILES, ERROR_PATH_NOT_FOUND,
    ERROR_SHARING_VIOLATION, ERROR_WRITE_PROTECT, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    FindFirstVolumeW, FindNextVolumeW, FindVolumeClose, GetFileInformationByHandle, GetFinalPathNameByHandleW, GetVolumePathNamesForVolumeNameW,
    BY_HANDLE_FILE_INFORMATION, IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS, VOLUME_NAME_GUID,
};
use windows_sys::Win32::System::Ioctl::{
    FSCTL_DISMOUNT_VOLUME, FSCTL_LOCK_VOLUME, IOCTL_DISK_GET_DRIVE_GEOMETRY_EX, IOCTL_DISK_GET_DRIVE_LAYOUT_EX, IOCTL_DISK_IS_WRITABLE,
    IOCTL_DISK_UPDATE_PROPERTIES, IOCTL_STORAGE_GET_DEVICE_NUMBER, IOCTL_STORAGE_QUERY_PROPERTY,
};
use windows_sys::Win32::System::IO::DeviceIoControl;

use super::winioctl::{self, WinIoctlError};
use super::{DiskInfo, DiskKind};

/// FILE_SHARE_READ | FILE_SHARE_WRITE from <winnt.h>.
const SHARE_READ_WRITE: u32 = 3;
/// Numbers probed for `\\.\PhysicalDriveN`, and how many missing ones in a row
/// end the search (numbers of removed disks stay free until reboot).
const MAX_DRIVES: u32 = 64;
const MISSES_TO_STOP: u32 = 16;
/// Largest ioctl output buffer we grow to (a GPT layout of 128 entries needs
/// 48 + 128 * 144 bytes; this leaves room for odd tables).
const MAX_IOCTL_BUFFER: usize = 1 << 20;
/// How long to keep trying FSCTL_LOCK_VOLUME before writing: programs that
/// just looked at the volume (Explorer, antivirus) close their handles when
/// told a lock is coming, which takes a moment.
const LOCK_TRIES: u32 = 20;
const LOCK_RETRY_PAUSE: Duration = Duration::from_millis(100);

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
    control(f, IOCTL_DISK_UPDATE_PROPERTIES)
}

/// No-op on Windows (see the module doc).
pub fn advise_sequential(_f: &File) {}

/// No-op on Windows (see the module doc).
pub fn advise_will_need(_f: &File, _offset: u64, _len: u64) {}

/// A control code that takes no input and returns no output.
fn control(f: &File, code: u32) -> io::Result<()> {
    let mut returned = 0u32;
    // SAFETY: the handle is valid while `f` lives; the codes passed here take
    // no input or output buffer (null pointers with length 0); `returned` is a
    // u32 we own; the call is synchronous (no OVERLAPPED).
    let ok = unsafe { DeviceIoControl(f.as_raw_handle(), code, std::ptr::null(), 0, std::ptr::null_mut(), 0, &mut returned, std::ptr::null_mut()) };
    if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn is_os_error(e: &io::Error, code: u32) -> bool {
    e.raw_os_error().is_some_and(|c| c as u32 == code)
}

/// A synchronous ioctl with an output buffer, starting at `initial` bytes and
/// doubling while Windows answers ERROR_INSUFFICIENT_BUFFER or ERROR_MORE_DATA.
/// Returns the bytes written.
fn ioctl(f: &File, code: u32, input: &[u8], initial: usize) -> io::Result<Vec<u8>> {
    let in_len = u32::try_from(input.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ioctl input too large"))?;
    let mut len = initial.clamp(16, MAX_IOCTL_BUFFER);
    loop {
        let mut out = vec![0u8; len];
        let mut returned = 0u32;
        let in_ptr = if input.is_empty() { std::ptr::null() } else { input.as_ptr().cast() };
        // SAFETY: the handle is valid while `f` lives; `input` is readable for
        // `in_len` bytes and `out` writable for `len` bytes (len fits in u32:
        // it is at most MAX_IOCTL_BUFFER), both owned by us and alive for the
        // whole synchronous call (no OVERLAPPED); `returned` is a u32 we own.
        // The codes used with this function are METHOD_BUFFERED, so the buffers
        // need no particular alignment.
        let ok = unsafe { DeviceIoControl(f.as_raw_handle(), code, in_ptr, in_len, out.as_mut_ptr().cast(), len as u32, &mut returned, std::ptr::null_mut()) };
        if ok != 0 {
            out.truncate((returned as usize).min(len));
            return Ok(out);
        }
        let e = io::Error::last_os_error();
        if (is_os_error(&e, ERROR_INSUFFICIENT_BUFFER) || is_os_error(&e, ERROR_MORE_DATA)) && len < MAX_IOCTL_BUFFER {
            len = (len * 2).min(MAX_IOCTL_BUFFER);
            continue;
        }
        return Err(e);
    }
}

/// IOCTL_STORAGE_QUERY_PROPERTY for one STORAGE_PROPERTY_ID, asking again
/// with the size the descriptor header announces when the first buffer was
/// too small (the call then succeeds with a truncated descriptor).
fn query_property(f: &File, property_id: u32) -> io::Result<Vec<u8>> {
    let q = winioctl::property_query(property_id);
    let out = ioctl(f, IOCTL_STORAGE_QUERY_PROPERTY, &q, 1024)?;
    match winioctl::descriptor_size(&out) {
        Ok(size) if size as usize > out.len() && (size as usize) <= MAX_IOCTL_BUFFER => ioctl(f, IOCTL_STORAGE_QUERY_PROPERTY, &q, size as usize),
        _ => Ok(out),
    }
}

fn invalid(e: WinIoctlError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Open a device for queries only: no access rights (ioctls declared
/// FILE_ANY_ACCESS still work), sharing everything.
fn open_query(path: &Path) -> io::Result<File> {
    OpenOptions::new().access_mode(0).share_mode(SHARE_READ_WRITE).open(path)
}

fn physical_drive_path(n: u32) -> PathBuf {
    PathBuf::from(format!(r"\\.\PhysicalDrive{n}"))
}

/// The disk number (N of `\\.\PhysicalDriveN`) of an open disk.
fn device_number(f: &File) -> io::Result<u32> {
    let b = ioctl(f, IOCTL_STORAGE_GET_DEVICE_NUMBER, &[], winioctl::layout::DEVICE_NUMBER)?;
    Ok(winioctl::parse_device_number(&b).map_err(invalid)?.device_number)
}

/// The disk number of a `\\.\PhysicalDriveN` path: asked from the device,
/// or read from the name when the device does not say.
pub fn disk_number(path: &Path) -> io::Result<u32> {
    let from_name = winioctl::physical_drive_number(&path.to_string_lossy());
    match open_query(path).and_then(|f| device_number(&f)) {
        Ok(n) => Ok(n),
        Err(e) => from_name.ok_or(e),
    }
}

/// Facts about `\\.\PhysicalDriveN`. Only the size is required; the other
/// queries are not implemented by every driver and are left out when they fail.
pub fn probe_physical_drive(path: &Path) -> io::Result<DiskInfo> {
    let f = open_query(path)?;
    let number = device_number(&f).ok().or_else(|| winioctl::physical_drive_number(&path.to_string_lossy()));
    let geo = winioctl::parse_geometry_ex(&ioctl(&f, IOCTL_DISK_GET_DRIVE_GEOMETRY_EX, &[], 256)?).map_err(invalid)?;
    let desc = query_property(&f, winioctl::STORAGE_DEVICE_PROPERTY)
        .and_then(|b| winioctl::parse_device_descriptor(&b).map_err(invalid))
        .map_err(|e| tracing::debug!(device = %path.display(), "no device descriptor: {e}"))
        .ok();
    let align = query_property(&f, winioctl::STORAGE_ACCESS_ALIGNMENT_PROPERTY)
        .and_then(|b| winioctl::parse_access_alignment(&b).map_err(invalid))
        .map_err(|e| tracing::debug!(device = %path.display(), "no access alignment: {e}"))
        .ok()
        .filter(|a| a.logical != 0);
    let rotational = query_property(&f, winioctl::STORAGE_DEVICE_SEEK_PENALTY_PROPERTY).ok().and_then(|b| winioctl::parse_seek_penalty(&b).ok());
    let read_only = matches!(control(&f, IOCTL_DISK_IS_WRITABLE), Err(e) if is_os_error(&e, ERROR_WRITE_PROTECT));
    let logical = align.map(|a| a.logical).or((geo.bytes_per_sector != 0).then_some(geo.bytes_per_sector)).unwrap_or(512);
    let physical = align.map(|a| a.physical).filter(|&p| p != 0).unwrap_or(logical);
    let (vendor, product, serial, bus, removable) = match desc {
        Some(d) => (d.vendor, d.product, d.serial, d.bus_type, d.removable),
        None => (None, None, None, 0, false),
    };
    // MEDIA_TYPE RemovableMedia (11): card readers and some USB sticks say so
    // only here.
    let removable = removable || geo.media_type == 11;
    let transport = winioctl::transport(bus, vendor.as_deref(), product.as_deref()).map(str::to_string);
    Ok(DiskInfo {
        path: path.to_path_buf(),
        name: match number {
            Some(n) => format!("PhysicalDrive{n}"),
            None => path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        },
        kind: DiskKind::Block,
        model: product,
        vendor,
        serial,
        wwn: None,
        size: geo.disk_size,
        logical_sector_size: logical,
        physical_sector_size: physical,
        transport,
        rotational,
        removable,
        read_only,
        devnum: None,
        loop_backing: None,
        file_id: None,
    })
}

/// `\\.\PhysicalDriveN` of the disks present, leaving out drives without
/// media (empty card readers). Numbers are probed upwards until
/// [`MISSES_TO_STOP`] in a row are missing.
pub fn list_physical_drives() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut misses = 0;
    for n in 0..MAX_DRIVES {
        let path = physical_drive_path(n);
        let f = match open_query(&path) {
            Ok(f) => f,
            Err(e) if is_os_error(&e, ERROR_FILE_NOT_FOUND) || is_os_error(&e, ERROR_PATH_NOT_FOUND) => {
                misses += 1;
                if misses >= MISSES_TO_STOP {
                    break;
                }
                continue;
            }
            // Present but not openable: list it, so `disks` shows the error.
            Err(_) => {
                misses = 0;
                out.push(path);
                continue;
            }
        };
        misses = 0;
        match ioctl(&f, IOCTL_DISK_GET_DRIVE_GEOMETRY_EX, &[], 256) {
            Err(e) if is_os_error(&e, ERROR_NOT_READY) || is_os_error(&e, ERROR_NO_MEDIA_IN_DRIVE) => continue,
            Ok(b) if winioctl::parse_geometry_ex(&b).is_ok_and(|g| g.disk_size == 0) => continue,
            _ => out.push(path),
        }
    }
    out
}

/// A volume Windows knows, as far as it lies on one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// `\\?\Volume{GUID}\`.
    pub guid_path: String,
    /// Drive letters and folders it is mounted on (`E:\`, `C:\mnt\data\`).
    pub mount_points: Vec<String>,
    /// Byte offset and length of its first extent on the disk.
    pub start: u64,
    pub length: u64,
    /// The partition starting at `start`, from the disk's drive layout.
    pub partition: Option<u32>,
    /// Whether it also has extents on other disks (dynamic disks, Storage Spaces).
    pub spans_disks: bool,
}

impl Volume {
    /// What a person calls it: its drive letters and folders, else its GUID path.
    pub fn label(&self) -> String {
        if self.mount_points.is_empty() {
            self.guid_path.clone()
        } else {
            self.mount_points.join(" ")
        }
    }

    /// The volume device to open, without the trailing backslash (with it,
    /// CreateFile would open the root folder instead).
    fn device_path(&self) -> PathBuf {
        PathBuf::from(self.guid_path.trim_end_matches('\\'))
    }
}

fn from_wide_nul(buf: &[u16]) -> String {
    let end = buf.iter().position(|&u| u == 0).unwrap_or(buf.len());
    String::from_utf16_lossy(&buf[..end])
}

/// `\\?\Volume{GUID}\` of every volume (FindFirstVolumeW/FindNextVolumeW).
fn volume_names() -> io::Result<Vec<String>> {
    // Volume GUID paths are 49 characters; MAX_PATH leaves room.
    let mut buf = [0u16; 260];
    // SAFETY: `buf` is writable for the length passed; the function writes a
    // NUL-terminated name into it and returns a search handle or
    // INVALID_HANDLE_VALUE.
    let h = unsafe { FindFirstVolumeW(buf.as_mut_ptr(), buf.len() as u32) };
    if h == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    let mut names = Vec::new();
    let result = loop {
        names.push(from_wide_nul(&buf));
        // SAFETY: `h` is the live search handle from FindFirstVolumeW (closed
        // only after this loop); `buf` is writable for the length passed.
        let ok = unsafe { FindNextVolumeW(h, buf.as_mut_ptr(), buf.len() as u32) };
        if ok == 0 {
            let e = io::Error::last_os_error();
            break if is_os_error(&e, ERROR_NO_MORE_FILES) { Ok(()) } else { Err(e) };
        }
    };
    // SAFETY: `h` is the search handle from FindFirstVolumeW, closed once here
    // and not used afterwards.
    unsafe { FindVolumeClose(h) };
    result.map(|()| names)
}

/// Drive letters and folder mount points of a volume (`\\?\Volume{GUID}\`).
fn mount_points(guid_path: &str) -> Vec<String> {
    let name: Vec<u16> = guid_path.encode_utf16().chain(Some(0)).collect();
    let mut len = 64u32;
    for _ in 0..4 {
        let mut buf = vec![0u16; len as usize];
        let mut needed = 0u32;
        // SAFETY: `name` is a NUL-terminated UTF-16 string we own; `buf` is
        // writable for `len` characters; `needed` is a u32 we own.
        let ok = unsafe { GetVolumePathNamesForVolumeNameW(name.as_ptr(), buf.as_mut_ptr(), len, &mut needed) };
        if ok != 0 {
            return winioctl::multi_sz(&buf[..(needed as usize).min(buf.len())]);
        }
        let e = io::Error::last_os_error();
        if !is_os_error(&e, ERROR_MORE_DATA) {
            tracing::debug!(volume = guid_path, "no mount points: {e}");
            return Vec::new();
        }
        len = needed.max(len * 2);
    }
    Vec::new()
}

/// The volumes with at least one extent on disk `disk` (N of
/// `\\.\PhysicalDriveN`), with their mount points and partition numbers.
/// Volumes without disk extents (CD-ROMs, RAM disks such as WinPE's X:) are
/// skipped.
pub fn volumes_on_disk(disk: u32) -> io::Result<Vec<Volume>> {
    let layout = open_query(&physical_drive_path(disk))
        .and_then(|f| ioctl(&f, IOCTL_DISK_GET_DRIVE_LAYOUT_EX, &[], 4096))
        .and_then(|b| winioctl::parse_drive_layout(&b).map_err(invalid))
        .map_err(|e| tracing::debug!(disk, "no drive layout: {e}"))
        .ok();
    let mut out = Vec::new();
    for guid_path in volume_names()? {
        let extents = open_query(Path::new(guid_path.trim_end_matches('\\')))
            .and_then(|f| ioctl(&f, IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS, &[], winioctl::layout::EXTENTS_HEADER + 4 * winioctl::layout::DISK_EXTENT))
            .and_then(|b| winioctl::parse_volume_disk_extents(&b).map_err(invalid));
        let extents = match extents {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(volume = guid_path, "no disk extents: {e}");
                continue;
            }
        };
        tracing::debug!(volume = guid_path, ?extents, "disk extents");
        let Some(first) = extents.iter().find(|x| x.disk_number == disk) else { continue };
        let partition = layout.as_ref().and_then(|l| l.partitions.iter().find(|p| p.is_used() && p.start == first.start)).map(|p| p.number);
        out.push(Volume {
            mount_points: mount_points(&guid_path),
            start: first.start,
            length: first.length,
            partition,
            spans_disks: extents.iter().any(|x| x.disk_number != disk),
            guid_path,
        });
    }
    out.sort_by_key(|v| v.start);
    Ok(out)
}

/// `\\?\Volume{GUID}\` out of a path GetFinalPathNameByHandleW returned with
/// VOLUME_NAME_GUID (`\\?\Volume{GUID}\dir\file`).
fn volume_guid_prefix(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(r"\\?\Volume{")?;
    let end = rest.find("}\\")?;
    Some(&path[..r"\\?\Volume{".len() + end + 2])
}

/// The volume holding an open file, as `\\?\Volume{GUID}\`.
fn volume_of_file(f: &File) -> io::Result<String> {
    let mut len = 512usize;
    for _ in 0..4 {
        let mut buf = vec![0u16; len];
        // SAFETY: the handle is valid while `f` lives; `buf` is writable for
        // `len` UTF-16 units (len stays far below u32::MAX), the size passed.
        let n = unsafe { GetFinalPathNameByHandleW(f.as_raw_handle(), buf.as_mut_ptr(), len as u32, VOLUME_NAME_GUID) } as usize;
        if n == 0 {
            return Err(io::Error::last_os_error());
        }
        if n < len {
            let path = String::from_utf16_lossy(&buf[..n]);
            return volume_guid_prefix(&path)
                .map(str::to_owned)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("not a volume GUID path: {path}")));
        }
        // Too small: n is the size needed, with the terminating NUL.
        len = n + 1;
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "file path keeps growing"))
}

/// The disks (N of `\\.\PhysicalDriveN`) holding the volume an open file is
/// on: every disk it has an extent on (IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS).
/// Empty for volumes on no disk (RAM disks such as WinPE's X:); an error when
/// the volume cannot be named (network shares, Wine's unix folders).
pub fn disks_holding_file(f: &File) -> io::Result<Vec<u32>> {
    let volume = volume_of_file(f)?;
    let extents = open_query(Path::new(volume.trim_end_matches('\\')))
        .and_then(|v| ioctl(&v, IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS, &[], winioctl::layout::EXTENTS_HEADER + 4 * winioctl::layout::DISK_EXTENT))
        .and_then(|b| winioctl::parse_volume_disk_extents(&b).map_err(invalid));
    match extents {
        Ok(x) => {
            let mut disks: Vec<u32> = x.iter().map(|e| e.disk_number).collect();
            disks.sort_unstable();
            disks.dedup();
            tracing::debug!(volume, ?disks, "disks holding the file");
            Ok(disks)
        }
        Err(e) => {
            tracing::debug!(volume, "no disk extents: {e}");
            Ok(Vec::new())
        }
    }
}

/// Why a volume cannot be locked, as far as can be told from outside.
fn why_in_use(v: &Volume) -> &'static str {
    let system_root = std::env::var("SystemRoot").unwrap_or_default().to_ascii_lowercase();
    let on_it = |name: &str| {
        v.mount_points.iter().any(|m| match std::fs::symlink_metadata(Path::new(m).join(name)) {
            Ok(_) => true,
            Err(e) => is_os_error(&e, ERROR_SHARING_VIOLATION),
        })
    };
    if !system_root.is_empty() && v.mount_points.iter().any(|m| system_root.starts_with(&m.to_ascii_lowercase())) {
        "it holds the running Windows"
    } else if on_it("pagefile.sys") || on_it("swapfile.sys") {
        "it holds a page file"
    } else {
        "files on it are open: the image being read, a program, or a command prompt or Explorer window in it"
    }
}

fn describe(v: &Volume, disk: u32) -> String {
    match v.partition {
        Some(p) => format!("{} (partition {p} of PhysicalDrive{disk})", v.label()),
        None => format!("{} (on PhysicalDrive{disk})", v.label()),
    }
}

fn lock_one(v: &Volume, tries: u32, dismount: bool) -> io::Result<File> {
    let f = OpenOptions::new().read(true).write(true).share_mode(SHARE_READ_WRITE).open(v.device_path())?;
    let mut last = None;
    for i in 0..tries {
        if i > 0 {
            std::thread::sleep(LOCK_RETRY_PAUSE);
        }
        match control(&f, FSCTL_LOCK_VOLUME) {
            Ok(()) => {
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        return Err(e);
    }
    if dismount {
        control(&f, FSCTL_DISMOUNT_VOLUME)?;
    }
    Ok(f)
}

/// Lock every volume on the disk at `path` and, with `dismount`, dismount it,
/// returning the handles that hold the locks (closing one unlocks its
/// volume, which Windows then mounts again on first use). When any volume
/// cannot be locked, all locks are released and the reasons returned, one per
/// volume, naming it by drive letter.
///
/// Without `dismount` this is a probe ([`busy_reasons`]): one attempt each,
/// and the locks are released when the caller drops the handles.
pub fn lock_volumes(path: &Path, dismount: bool) -> Result<Vec<File>, Vec<String>> {
    let disk = disk_number(path).map_err(|e| vec![format!("cannot tell which disk {} is: {e}", path.display())])?;
    let volumes = volumes_on_disk(disk).map_err(|e| vec![format!("cannot list the volumes on {}: {e}", path.display())])?;
    let tries = if dismount { LOCK_TRIES } else { 1 };
    let mut held = Vec::new();
    let mut reasons = Vec::new();
    for v in &volumes {
        match lock_one(v, tries, dismount) {
            Ok(f) => {
                tracing::debug!(volume = v.guid_path, dismount, "locked");
                held.push(f);
            }
            Err(e) => reasons.push(format!("{} cannot be locked, {} ({e})", describe(v, disk), why_in_use(v))),
        }
    }
    if reasons.is_empty() {
        Ok(held)
    } else {
        Err(reasons)
    }
}

/// Why the disk at `path` cannot be written now: its volumes that cannot be
/// locked, by drive letter. Mounted volumes that can be locked are no reason,
/// since writing dismounts them (see the module doc). Each lockable volume is
/// locked for a moment by this check.
pub fn busy_reasons(path: &Path) -> Vec<String> {
    match lock_volumes(path, false) {
        Ok(_released_on_drop) => Vec::new(),
        Err(reasons) => reasons,
    }
}

// Smoke tests against whatever disks the machine has (under Wine: one
// PhysicalDrive0 and volumes without extents). They check that the calls and
// the buffer handling work, not particular values, and change nothing.
#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (STYLE.md)
mod tests {
    use super::*;

    #[test]
    fn listed_drives_probe() {
        for p in list_physical_drives() {
            let d = probe_physical_drive(&p).unwrap();
            assert_eq!(d.kind, DiskKind::Block);
            assert!(d.size > 0, "{}", p.display());
            assert!(d.logical_sector_size >= 512 && d.physical_sector_size >= d.logical_sector_size);
            assert_eq!(disk_number(&p).unwrap(), winioctl::physical_drive_number(&p.to_string_lossy()).unwrap());
        }
    }

    /// A buffer too small for the answer: real Windows says
    /// ERROR_INSUFFICIENT_BUFFER and `ioctl` grows it; Wine returns the
    /// truncated structure, which the decoder must reject cleanly.
    #[test]
    fn small_buffers_are_safe() {
        let Some(p) = list_physical_drives().into_iter().next() else { return };
        let f = open_query(&p).unwrap();
        let b = ioctl(&f, IOCTL_DISK_GET_DRIVE_GEOMETRY_EX, &[], 16).unwrap();
        assert_eq!(b.len() >= winioctl::layout::GEOMETRY_EX_FIXED, winioctl::parse_geometry_ex(&b).is_ok());
    }

    #[test]
    fn volumes_enumerate() {
        assert!(!volume_names().unwrap().is_empty());
        for n in 0..2 {
            for v in volumes_on_disk(n).unwrap() {
                assert!(v.guid_path.starts_with(r"\\?\Volume{"), "{v:?}");
            }
        }
    }

    #[test]
    fn volume_of_a_file() {
        assert_eq!(volume_guid_prefix(r"\\?\Volume{0b2394a9-095e-487d-8d48-719ecd4d78ca}\img\a.img"), Some(r"\\?\Volume{0b2394a9-095e-487d-8d48-719ecd4d78ca}\"));
        assert_eq!(volume_guid_prefix(r"\\?\Volume{x}\"), Some(r"\\?\Volume{x}\"));
        assert_eq!(volume_guid_prefix(r"\\?\C:\img\a.img"), None);
        assert_eq!(volume_guid_prefix(r"\\?\Volume{x"), None);
        // Under Wine the temp folder is a unix folder on Z:, which may have no
        // volume GUID: an error or a disk list, never a crash.
        let t = std::env::temp_dir().join(format!("rescue-vol-{}", std::process::id()));
        std::fs::write(&t, b"x").unwrap();
        let r = disks_holding_file(&File::open(&t).unwrap());
        let _ = std::fs::remove_file(&t);
        if let Ok(d) = r {
            assert!(d.iter().all(|n| *n < 1024), "{d:?}");
        }
    }

    #[test]
    fn missing_drive() {
        let p = Path::new(r"\\.\PhysicalDrive63");
        assert!(probe_physical_drive(p).is_err());
        assert!(busy_reasons(p).is_empty());
    }
}
