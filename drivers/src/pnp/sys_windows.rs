//! SetupAPI: the present devices of every setup class with their hardware
//! IDs, compatible IDs, setup class and description. The only `unsafe` code
//! of the crate; the property buffers are decoded by the safe `pnp.rs`.
#![allow(unsafe_code)]

use std::io;
use std::ptr;

use windows_sys::Win32::Devices::DeviceAndDriverInstallation::{
    SetupDiDestroyDeviceInfoList, SetupDiEnumDeviceInfo, SetupDiGetClassDevsW,
    SetupDiGetDeviceInstanceIdW, SetupDiGetDeviceRegistryPropertyW, DIGCF_ALLCLASSES,
    DIGCF_PRESENT, HDEVINFO, SETUP_DI_REGISTRY_PROPERTY, SPDRP_CLASS, SPDRP_COMPATIBLEIDS,
    SPDRP_DEVICEDESC, SPDRP_HARDWAREID, SP_DEVINFO_DATA,
};
use windows_sys::Win32::Foundation::{
    ERROR_INSUFFICIENT_BUFFER, ERROR_NO_MORE_ITEMS, INVALID_HANDLE_VALUE,
};

use super::{multi_sz, sz, PnpDevice, PnpError};

/// A device information set, destroyed on drop.
struct DevInfoList(HDEVINFO);

impl Drop for DevInfoList {
    fn drop(&mut self) {
        // SAFETY: self.0 is a valid set returned by SetupDiGetClassDevsW and is
        // destroyed only here, once.
        unsafe { SetupDiDestroyDeviceInfoList(self.0) };
    }
}

fn call_err(call: &'static str) -> PnpError {
    PnpError::Call {
        call,
        source: io::Error::last_os_error(),
    }
}

/// A registry property of a device; `None` when the device does not have it
/// (SetupAPI answers ERROR_INVALID_DATA then) or it cannot be read.
fn property(
    set: &DevInfoList,
    data: &SP_DEVINFO_DATA,
    prop: SETUP_DI_REGISTRY_PROPERTY,
) -> Option<Vec<u8>> {
    let mut need = 0u32;
    // SAFETY: set and data come from SetupDiGetClassDevsW/SetupDiEnumDeviceInfo;
    // a null buffer with size 0 is the documented way to ask for the size,
    // and `need` is a valid u32 out-pointer; the type out-pointer may be null.
    let ok = unsafe {
        SetupDiGetDeviceRegistryPropertyW(
            set.0,
            data,
            prop,
            ptr::null_mut(),
            ptr::null_mut(),
            0,
            &mut need,
        )
    };
    if ok == 0
        && io::Error::last_os_error().raw_os_error() != Some(ERROR_INSUFFICIENT_BUFFER as i32)
    {
        return None;
    }
    let mut buf = vec![0u8; need as usize];
    let mut got = 0u32;
    // SAFETY: as above; buf is writable for buf.len() bytes, which is the size passed.
    let ok = unsafe {
        SetupDiGetDeviceRegistryPropertyW(
            set.0,
            data,
            prop,
            ptr::null_mut(),
            buf.as_mut_ptr(),
            buf.len() as u32,
            &mut got,
        )
    };
    if ok == 0 {
        return None;
    }
    buf.truncate(got as usize);
    Some(buf)
}

fn instance_id(set: &DevInfoList, data: &SP_DEVINFO_DATA) -> String {
    // Device instance IDs are at most MAX_DEVICE_ID_LEN (200) characters.
    let mut buf = [0u16; 512];
    let mut need = 0u32;
    // SAFETY: set/data as in `property`; buf is writable for buf.len() UTF-16
    // units, the size passed; need is a valid out-pointer.
    let ok = unsafe {
        SetupDiGetDeviceInstanceIdW(set.0, data, buf.as_mut_ptr(), buf.len() as u32, &mut need)
    };
    if ok == 0 {
        return String::new();
    }
    let end = buf.iter().position(|c| *c == 0).unwrap_or(buf.len());
    String::from_utf16_lossy(&buf[..end])
}

/// Every present device, of every setup class.
pub(super) fn present_devices() -> Result<Vec<PnpDevice>, PnpError> {
    // SAFETY: a null class GUID is allowed with DIGCF_ALLCLASSES, a null
    // enumerator means all, and no parent window is needed; the returned set
    // is owned by the DevInfoList below.
    let set = unsafe {
        SetupDiGetClassDevsW(
            ptr::null(),
            ptr::null(),
            ptr::null_mut(),
            DIGCF_PRESENT | DIGCF_ALLCLASSES,
        )
    };
    if set == INVALID_HANDLE_VALUE as HDEVINFO {
        return Err(call_err("SetupDiGetClassDevsW"));
    }
    let set = DevInfoList(set);
    let mut out = Vec::new();
    for index in 0u32.. {
        let mut data = SP_DEVINFO_DATA {
            cbSize: size_of::<SP_DEVINFO_DATA>() as u32,
            ..Default::default()
        };
        // SAFETY: set is valid; data is a writable SP_DEVINFO_DATA whose
        // cbSize is set as the function requires.
        if unsafe { SetupDiEnumDeviceInfo(set.0, index, &mut data) } == 0 {
            if io::Error::last_os_error().raw_os_error() == Some(ERROR_NO_MORE_ITEMS as i32) {
                break;
            }
            return Err(call_err("SetupDiEnumDeviceInfo"));
        }
        out.push(PnpDevice {
            instance_id: instance_id(&set, &data),
            hardware_ids: property(&set, &data, SPDRP_HARDWAREID)
                .map(|b| multi_sz(&b))
                .unwrap_or_default(),
            compatible_ids: property(&set, &data, SPDRP_COMPATIBLEIDS)
                .map(|b| multi_sz(&b))
                .unwrap_or_default(),
            class: property(&set, &data, SPDRP_CLASS).map(|b| sz(&b)),
            description: property(&set, &data, SPDRP_DEVICEDESC).map(|b| sz(&b)),
        });
    }
    tracing::debug!(devices = out.len(), "setupapi present devices");
    Ok(out)
}
