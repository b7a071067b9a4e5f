//! The driver INF parser on arbitrary bytes (any encoding).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = drivers::parse_inf(data);
});
