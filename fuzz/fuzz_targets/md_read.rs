//! imaging::md::read_member on arbitrary bytes taken as a whole md member
//! (so the 1.2, 1.1 and 1.0 superblock places and 0.90's are all in the
//! input): it never panics, a member it accepts has its data inside, and
//! a 1.x superblock with its event count raised (`with_events`, as
//! universal restore writes it) reads back with that count.
#![no_main]

use imaging::md;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    if let Ok(Some(m)) = md::read_member(&data, len) {
        assert!(m.data_offset + m.data_size <= len, "data inside the member");
        if m.sb_len > 0 {
            let (at, n) = (m.sb_at as usize, m.sb_len as usize);
            let events = m.events.wrapping_add(1);
            let up = md::with_events(&data[at..at + n], events, 1).expect("an accepted superblock takes new events");
            let mut d = data.to_vec();
            d[at..at + n].copy_from_slice(&up);
            let again = md::read_member(&d.as_slice(), len).expect("reads").expect("still a member");
            assert_eq!((again.events, again.sb_at, again.uuid.as_str()), (events, m.sb_at, m.uuid.as_str()));
        }
    }
});
