//! Marvin32 hash, used by new-format transaction log entries to validate
//! themselves (regf: Log entries) (seed 0x82EF4D887A4E55C5). Algorithm as
//! published by Microsoft (the .NET `Marvin` class is the public description).

/// Seed the registry uses for log entry hashes.
pub const LOG_SEED: u64 = 0x82EF_4D88_7A4E_55C5;

fn mix(lo: &mut u32, hi: &mut u32) {
    *hi ^= *lo;
    *lo = lo.rotate_left(20).wrapping_add(*hi);
    *hi = hi.rotate_left(9) ^ *lo;
    *lo = lo.rotate_left(27).wrapping_add(*hi);
    *hi = hi.rotate_left(19);
}

/// 64-bit Marvin32 state `(hi << 32) | lo` after hashing `data`.
pub fn marvin32(seed: u64, data: &[u8]) -> u64 {
    let mut lo = seed as u32;
    let mut hi = (seed >> 32) as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        lo = lo.wrapping_add(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        mix(&mut lo, &mut hi);
    }
    let tail = chunks.remainder();
    let mut fin: u32 = 0x80;
    for b in tail.iter().rev() {
        fin = (fin << 8) | u32::from(*b);
    }
    lo = lo.wrapping_add(fin);
    mix(&mut lo, &mut hi);
    mix(&mut lo, &mut hi);
    (u64::from(hi) << 32) | u64::from(lo)
}
