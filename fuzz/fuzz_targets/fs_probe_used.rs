//! imaging::fs::probe then used_extents on arbitrary bytes taken as a whole
//! partition: errors are fine, panics and runaway allocations are not.
#![no_main]

use imaging::fs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    if let Ok(Some(info)) = fs::probe(&data, len) {
        let _ = fs::used_extents(&data, len, &info);
    }
});
