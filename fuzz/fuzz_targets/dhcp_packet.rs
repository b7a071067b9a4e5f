//! DHCP packet and PXE vendor-option codecs on arbitrary bytes. Parsing
//! normalizes (repeated options are concatenated, RFC 3396; overloaded
//! `file`/`sname` options move to the options field, RFC 2132 9.3), so the
//! property is: what we write parses, and writing that again gives the same
//! bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pxe_server::dhcp::{Packet, PxeVendorOptions};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::parse(data) {
        let b1 = p.to_bytes();
        let again = Packet::parse(&b1).expect("a written packet parses");
        assert_eq!(b1, again.to_bytes(), "writing is not stable after one parse");
    }
    let _ = PxeVendorOptions::parse(data);
});
