//! TFTP packet codec on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pxe_server::tftp::Packet;

fuzz_target!(|data: &[u8]| {
    let _ = Packet::parse(data);
});
