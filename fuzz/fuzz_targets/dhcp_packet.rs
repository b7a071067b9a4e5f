//! DHCP packet and PXE vendor-option codecs on arbitrary bytes; whatever
//! parses must write and parse again to the same packet (except with option
//! overload, RFC 2132 9.3, where options read from `file`/`sname` are written
//! back to the options field).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pxe_server::dhcp::{Packet, PxeVendorOptions};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::parse(data) {
        let again = Packet::parse(&p.to_bytes()).expect("a written packet parses");
        if !p.options.iter().any(|o| o.code == 52) {
            assert_eq!(p, again);
        }
    }
    let _ = PxeVendorOptions::parse(data);
});
