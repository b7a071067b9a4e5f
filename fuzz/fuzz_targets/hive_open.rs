//! The registry hive reader on arbitrary bytes: open, then walk every key and
//! value (bounded), as the injector does.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = drivers::open_hive_bytes(data.to_vec()) else { return };
    let mut stack = vec![h.root()];
    let mut seen = 0;
    while let Some(k) = stack.pop() {
        seen += 1;
        if seen > 10_000 {
            break;
        }
        let _ = h.key_name(k);
        let _ = h.values(k);
        if let Ok(children) = h.subkeys(k) {
            stack.extend(children);
        }
    }
});
