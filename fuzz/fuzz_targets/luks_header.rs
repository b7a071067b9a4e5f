//! imaging::luks on arbitrary bytes: as the start of a device (LUKS1's
//! binary header, LUKS2's checksummed copies) and as LUKS2 JSON metadata
//! (which a checksum otherwise keeps the fuzzer from reaching). It never
//! panics, and a header it accepts has a data sector size dm-crypt knows and
//! keyslot key sizes that were checked.
#![no_main]

use imaging::luks::Header;
use libfuzzer_sys::fuzz_target;

fn check(h: &Header) {
    assert!(matches!(h.sector_size, 512 | 1024 | 2048 | 4096));
    for k in &h.keyslots {
        assert!((1..=256).contains(&k.key_len) && (1..=256).contains(&k.area_key_len));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Header::read(&data) {
        check(&h);
    }
    if let Ok(h) = Header::luks2_json(&String::from_utf8_lossy(data), String::new(), String::new()) {
        check(&h);
    }
});
