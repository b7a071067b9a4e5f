//! imaging::md::read_member on arbitrary bytes taken as a whole md member
//! (so the 1.2, 1.1 and 1.0 superblock places and 0.90's are all in the
//! input): it never panics, and a member it accepts has its data inside.
#![no_main]

use imaging::md;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    if let Ok(Some(m)) = md::read_member(&data, len) {
        assert!(m.data_offset + m.data_size <= len, "data inside the member");
    }
});
