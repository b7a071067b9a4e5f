//! imaging::lvm::read_pv on arbitrary bytes taken as the start of a physical
//! volume (zeros after them, as on a fresh PV: its metadata area is ~1 MiB
//! while the text in it is a few KiB), and every linear range it maps must
//! lie inside the PV's extents. The metadata text parser alone runs on the
//! same bytes as text.
#![no_main]

use imaging::lvm;
use imaging::ReadAt;
use libfuzzer_sys::fuzz_target;

struct Padded<'a>(&'a [u8]);

impl ReadAt for Padded<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        buf.fill(0);
        if let Ok(at) = usize::try_from(offset) {
            if at < self.0.len() {
                let n = buf.len().min(self.0.len() - at);
                buf[..n].copy_from_slice(&self.0[at..at + n]);
            }
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64 + (1 << 20);
    if let Ok(Some(pv)) = lvm::read_pv(&Padded(data), len) {
        if let Some(vg) = &pv.vg {
            for lv in &vg.lvs {
                if let Ok((off, n)) = vg.linear_range(lv, &pv.uuid) {
                    let me = vg.pvs.iter().find(|p| p.id == pv.uuid).expect("range on a listed PV");
                    assert!(n > 0 && off >= me.pe_start, "range inside the extents");
                    assert!((off - me.pe_start + n) / vg.extent_size <= me.pe_count, "range inside the extents");
                }
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = lvm::parse_vg(text);
    }
});
