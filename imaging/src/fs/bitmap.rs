//! Runs of set bits in allocation bitmaps (LSB-first within each byte, as
//! ext2/3/4, NTFS and exFAT all store them).

/// Call `f(first_bit, count)` for every run of set bits among the first
/// `nbits` bits of `bitmap`, with bit numbers offset by `base`. Whole 0x00 and
/// 0xFF bytes are handled without looking at single bits.
pub(crate) fn for_each_run(bitmap: &[u8], nbits: u64, base: u64, mut f: impl FnMut(u64, u64)) {
    let nbits = nbits.min(bitmap.len() as u64 * 8);
    let mut run_start: Option<u64> = None;
    let mut bit = 0u64;
    while bit < nbits {
        let byte = bitmap.get((bit / 8) as usize).copied().unwrap_or(0);
        if bit & 7 == 0 && bit + 8 <= nbits && (byte == 0 || byte == 0xff) {
            match (byte, run_start) {
                (0, Some(s)) => {
                    f(base + s, bit - s);
                    run_start = None;
                }
                (0xff, None) => run_start = Some(bit),
                _ => {}
            }
            bit += 8;
            continue;
        }
        let set = byte & (1 << (bit % 8)) != 0;
        match (set, run_start) {
            (false, Some(s)) => {
                f(base + s, bit - s);
                run_start = None;
            }
            (true, None) => run_start = Some(bit),
            _ => {}
        }
        bit += 1;
    }
    if let Some(s) = run_start {
        f(base + s, nbits - s);
    }
}

/// Number of set bits among the first `nbits` bits.
#[cfg(test)]
pub(crate) fn count_ones(bitmap: &[u8], nbits: u64) -> u64 {
    let mut n = 0;
    for_each_run(bitmap, nbits, 0, |_, c| n += c);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(b: &[u8], nbits: u64) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        for_each_run(b, nbits, 100, |s, c| v.push((s, c)));
        v
    }

    #[test]
    fn runs_across_bytes() {
        assert_eq!(
            runs(&[0b1000_0001, 0xff, 0x00, 0x01], 32),
            vec![(100, 1), (107, 9), (124, 1)]
        );
        assert_eq!(runs(&[0xff, 0xff], 12), vec![(100, 12)]);
        assert_eq!(runs(&[0xff], 64), vec![(100, 8)]);
        assert_eq!(runs(&[], 64), vec![]);
        assert_eq!(count_ones(&[0x0f, 0xf0, 0xff], 20), 12);
    }

    #[test]
    fn matches_naive() {
        let mut x = 0x1234_5678u32;
        let b: Vec<u8> = (0..300)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 7 == 0 {
                    0xff
                } else if i % 5 == 0 {
                    0
                } else {
                    (x >> 16) as u8
                }
            })
            .collect();
        for nbits in [0u64, 1, 7, 8, 9, 100, 2399, 2400] {
            let mut naive = Vec::new();
            let mut cur: Option<u64> = None;
            for i in 0..nbits {
                let set = b[(i / 8) as usize] & (1 << (i % 8)) != 0;
                match (set, cur) {
                    (true, None) => cur = Some(i),
                    (false, Some(s)) => {
                        naive.push((s + 100, i - s));
                        cur = None;
                    }
                    _ => {}
                }
            }
            if let Some(s) = cur {
                naive.push((s + 100, nbits - s));
            }
            assert_eq!(runs(&b, nbits), naive, "nbits {nbits}");
        }
    }
}
