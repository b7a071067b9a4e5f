//! imaging::part::read on arbitrary bytes taken as a whole disk, with 512-
//! and 4096-byte sectors. Whatever reads must also serialize (or be refused)
//! without panicking, and a serialized table must read back with the same
//! partitions.
#![no_main]

use imaging::part;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    for ss in [512u32, 4096] {
        let Ok(Some(t)) = part::read(&data, len, ss) else {
            continue;
        };
        let _ = part::table_extents(&t, len);
        let _ = part::translate(&t, 512 + 4096 - ss);
        let Ok(writes) = part::serialize(&t, len, data.get(..512)) else {
            continue;
        };
        let mut disk = vec![0u8; data.len()];
        for w in &writes {
            let at = w.offset as usize;
            disk[at..at + w.data.len()].copy_from_slice(&w.data);
        }
        let back = part::read(&disk, len, ss)
            .expect("a serialized table reads back")
            .expect("a serialized table is a table");
        assert_eq!(
            back.partitions, t.partitions,
            "read(serialize(t)) keeps the partitions"
        );
    }
});
