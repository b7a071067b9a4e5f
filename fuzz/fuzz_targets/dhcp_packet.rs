//! DHCP packet and PXE vendor-option codecs on arbitrary bytes; whatever
//! parses must write and parse again to the same packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pxe_server::dhcp::{Packet, PxeVendorOptions};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::parse(data) {
        let again = Packet::parse(&p.to_bytes()).expect("a written packet parses");
        assert_eq!(p, again);
    }
    let _ = PxeVendorOptions::parse(data);
});
