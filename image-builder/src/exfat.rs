//! The few exFAT facts the USB image needs (Microsoft "exFAT file system
//! specification", sections 3.1 main boot sector, 3.4 boot checksum, 7.1
//! allocation bitmap entry, 6.2 FAT chains):
//!
//! - [`set_serial`]: `mkfs.exfat` takes the volume serial number from the
//!   clock; a reproducible build sets it and recomputes the boot checksum of
//!   the main and the backup boot region.
//! - [`Volume::is_empty`]: whether the root directory holds no file or
//!   directory (only the bitmap, up-case table, label and GUID entries that
//!   `mkfs.exfat` writes), so `--write` may recreate it at the stick's size.
//! - [`Volume::used_end`]: the byte offset after the last allocated cluster:
//!   everything `mkfs.exfat` wrote lies before it, so a freshly made volume
//!   of any size is copied by copying that prefix.
//!
//! Deliberately unsupported: sector sizes other than 512..4096, and reading
//! files (nothing here needs more than the root directory).

use imaging::ReadAt;

/// What is wrong with a volume.
#[derive(Debug, thiserror::Error)]
pub enum ExfatError {
    #[error("reading {len} bytes at byte {offset}: {source}")]
    Io {
        offset: u64,
        len: u64,
        source: std::io::Error,
    },
    #[error("not an exFAT volume (no \"EXFAT   \" name in the boot sector)")]
    NotExfat,
    #[error("exFAT boot sector field {field} is invalid: {value}")]
    BadField { field: &'static str, value: u64 },
    #[error("exFAT root directory has no allocation bitmap entry")]
    NoBitmap,
}

fn read(dev: &dyn ReadAt, offset: u64, len: usize) -> Result<Vec<u8>, ExfatError> {
    let mut buf = vec![0u8; len];
    dev.read_exact_at(&mut buf, offset)
        .map_err(|source| ExfatError::Io {
            offset,
            len: len as u64,
            source,
        })?;
    Ok(buf)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// Boot checksum over the first 11 sectors of a boot region (section 3.4):
/// VolumeFlags (bytes 106-107) and PercentInUse (byte 112) are skipped.
pub fn boot_checksum(region: &[u8]) -> u32 {
    region
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 106 | 107 | 112))
        .fold(0u32, |c, (_, &b)| {
            c.rotate_right(1).wrapping_add(u32::from(b))
        })
}

/// Set the volume serial number of the exFAT volume at the start of `img`
/// and rewrite both boot regions' checksum sectors.
pub fn set_serial(img: &std::fs::File, serial: u32) -> Result<(), ExfatError> {
    use std::os::unix::fs::FileExt;
    let boot = read(img, 0, 512)?;
    if boot.get(3..11) != Some(b"EXFAT   ") {
        return Err(ExfatError::NotExfat);
    }
    let shift = boot[108];
    if !(9..=12).contains(&shift) {
        return Err(ExfatError::BadField {
            field: "BytesPerSectorShift",
            value: u64::from(shift),
        });
    }
    let ss = 1usize << shift;
    for region in [0u64, 12] {
        let base = region * ss as u64;
        let mut r = read(img, base, 12 * ss)?;
        r[100..104].copy_from_slice(&serial.to_le_bytes());
        let sum = boot_checksum(&r[..11 * ss]).to_le_bytes();
        for chunk in r[11 * ss..].chunks_exact_mut(4) {
            chunk.copy_from_slice(&sum);
        }
        img.write_all_at(&r, base)
            .map_err(|source| ExfatError::Io {
                offset: base,
                len: r.len() as u64,
                source,
            })?;
    }
    Ok(())
}

/// An exFAT volume's geometry, from its main boot sector.
#[derive(Debug, Clone)]
pub struct Volume {
    /// Where the volume starts on `dev`.
    pub base: u64,
    pub sector_size: u64,
    pub cluster_size: u64,
    pub volume_bytes: u64,
    fat_offset: u64,
    heap_offset: u64,
    cluster_count: u32,
    root_cluster: u32,
}

/// Upper bound on clusters followed in one chain (a corrupt FAT may loop).
const MAX_CHAIN: usize = 1 << 16;

impl Volume {
    /// Read the boot sector of the volume starting at byte `base` of `dev`.
    pub fn open(dev: &dyn ReadAt, base: u64) -> Result<Volume, ExfatError> {
        let b = read(dev, base, 512)?;
        if b.get(3..11) != Some(b"EXFAT   ") {
            return Err(ExfatError::NotExfat);
        }
        let (ss_shift, sc_shift) = (b[108], b[109]);
        if !(9..=12).contains(&ss_shift) {
            return Err(ExfatError::BadField {
                field: "BytesPerSectorShift",
                value: u64::from(ss_shift),
            });
        }
        if u32::from(ss_shift) + u32::from(sc_shift) > 25 {
            return Err(ExfatError::BadField {
                field: "SectorsPerClusterShift",
                value: u64::from(sc_shift),
            });
        }
        let ss = 1u64 << ss_shift;
        let v = Volume {
            base,
            sector_size: ss,
            cluster_size: ss << sc_shift,
            volume_bytes: u64_at(&b, 72).saturating_mul(ss),
            fat_offset: u64::from(u32_at(&b, 80)) * ss,
            heap_offset: u64::from(u32_at(&b, 88)) * ss,
            cluster_count: u32_at(&b, 92),
            root_cluster: u32_at(&b, 96),
        };
        if v.root_cluster < 2 || v.root_cluster - 2 >= v.cluster_count {
            return Err(ExfatError::BadField {
                field: "FirstClusterOfRootDirectory",
                value: u64::from(v.root_cluster),
            });
        }
        Ok(v)
    }

    fn cluster_offset(&self, c: u32) -> u64 {
        self.base + self.heap_offset + u64::from(c - 2) * self.cluster_size
    }

    /// The clusters of a FAT chain starting at `first` (at most
    /// [`MAX_CHAIN`], stopping at anything that is not a valid cluster).
    fn chain(&self, dev: &dyn ReadAt, first: u32) -> Result<Vec<u32>, ExfatError> {
        let mut out = Vec::new();
        let mut c = first;
        while c >= 2 && c - 2 < self.cluster_count && out.len() < MAX_CHAIN {
            if out.contains(&c) {
                break;
            }
            out.push(c);
            let e = read(dev, self.base + self.fat_offset + u64::from(c) * 4, 4)?;
            c = u32_at(&e, 0);
        }
        Ok(out)
    }

    /// The in-use entries of the root directory: (type, entry bytes).
    fn root_entries(&self, dev: &dyn ReadAt) -> Result<Vec<(u8, Vec<u8>)>, ExfatError> {
        let mut out = Vec::new();
        for c in self.chain(dev, self.root_cluster)? {
            let data = read(dev, self.cluster_offset(c), self.cluster_size as usize)?;
            for e in data.chunks_exact(32) {
                match e[0] {
                    0x00 => return Ok(out),
                    t if t & 0x80 != 0 => out.push((t, e.to_vec())),
                    _ => {} // unused (deleted) entry
                }
            }
        }
        Ok(out)
    }

    /// No file or directory in the root directory.
    pub fn is_empty(&self, dev: &dyn ReadAt) -> Result<bool, ExfatError> {
        Ok(self
            .root_entries(dev)?
            .iter()
            .all(|(t, _)| matches!(t, 0x81 | 0x82 | 0x83 | 0xa0)))
    }

    /// Bytes from the volume start to the end of the last allocated cluster
    /// (the allocation bitmap says which are).
    pub fn used_end(&self, dev: &dyn ReadAt) -> Result<u64, ExfatError> {
        let entries = self.root_entries(dev)?;
        let (_, bm) = entries
            .iter()
            .find(|(t, _)| *t == 0x81)
            .ok_or(ExfatError::NoBitmap)?;
        let (first, len) = (u32_at(bm, 20), u64_at(bm, 24));
        let need = u64::from(self.cluster_count).div_ceil(8);
        if len < need || len > need + self.cluster_size {
            return Err(ExfatError::BadField {
                field: "allocation bitmap DataLength",
                value: len,
            });
        }
        let mut last: Option<u64> = None;
        let mut bit_base = 0u64;
        for c in self.chain(dev, first)? {
            let data = read(dev, self.cluster_offset(c), self.cluster_size as usize)?;
            for (i, &byte) in data.iter().enumerate() {
                if byte != 0 {
                    let bit = bit_base + i as u64 * 8 + 7 - u64::from(byte.leading_zeros());
                    if bit < u64::from(self.cluster_count) {
                        last = Some(bit);
                    }
                }
            }
            bit_base += self.cluster_size * 8;
            if bit_base >= u64::from(self.cluster_count) {
                break;
            }
        }
        // Bit n is cluster n + 2, the (n + 1)-th cluster of the heap.
        let end = self.heap_offset + last.map_or(0, |b| (b + 1) * self.cluster_size);
        Ok(end.min(self.volume_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn mkfs(size: u64) -> Option<tempfile::NamedTempFile> {
        let t = tempfile::NamedTempFile::new().expect("temp file");
        t.as_file().set_len(size).expect("size");
        let ok = Command::new("mkfs.exfat")
            .args(["-L", "TEST"])
            .arg(t.path())
            .output()
            .ok()?
            .status
            .success();
        ok.then_some(t)
    }

    #[test]
    fn checksum_matches_mkfs_and_serial_is_set() {
        let Some(t) = mkfs(16 << 20) else {
            eprintln!("SKIPPED: mkfs.exfat missing (apt-get install exfatprogs)");
            return;
        };
        let f = t.as_file();
        let region = read(f, 0, 12 * 512).expect("read");
        assert_eq!(
            u32_at(&region, 11 * 512),
            boot_checksum(&region[..11 * 512]),
            "our checksum differs from mkfs.exfat's"
        );
        set_serial(f, 0x1234_5678).expect("patch");
        for base in [0u64, 12 * 512] {
            let r = read(f, base, 12 * 512).expect("read");
            assert_eq!(u32_at(&r, 100), 0x1234_5678);
            assert_eq!(u32_at(&r, 11 * 512), boot_checksum(&r[..11 * 512]));
            assert_eq!(u32_at(&r, 11 * 512 + 508), u32_at(&r, 11 * 512));
        }
        if let Ok(o) = Command::new("fsck.exfat").arg("-n").arg(t.path()).output() {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        }
    }

    #[test]
    fn fresh_volume_is_empty_and_its_metadata_is_at_the_start() {
        let Some(t) = mkfs(64 << 20) else {
            eprintln!("SKIPPED: mkfs.exfat missing");
            return;
        };
        let f = t.as_file();
        let v = Volume::open(f, 0).expect("exFAT");
        assert!(v.is_empty(f).expect("root"));
        let end = v.used_end(f).expect("bitmap");
        assert!(end > v.heap_offset && end < 4 << 20, "used end {end}");
        // Nothing but zeroes after it.
        let rest = read(f, end, (64 << 20) - end as usize).expect("read");
        assert!(rest.iter().all(|&b| b == 0));
    }

    #[test]
    fn a_file_makes_it_non_empty() {
        let Some(t) = mkfs(16 << 20) else {
            eprintln!("SKIPPED: mkfs.exfat missing");
            return;
        };
        let f = t.as_file();
        let v = Volume::open(f, 0).expect("exFAT");
        // Append a File directory entry (type 0x85) after the last in-use
        // entry of the root directory.
        let n = v.root_entries(f).expect("root").len() as u64;
        let off = v.cluster_offset(v.root_cluster) + n * 32;
        let mut e = [0u8; 32];
        e[0] = 0x85;
        std::os::unix::fs::FileExt::write_all_at(f, &e, off).expect("write");
        assert!(!v.is_empty(f).expect("root"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut b = vec![0u8; 4096];
        assert!(matches!(Volume::open(&b, 0), Err(ExfatError::NotExfat)));
        b[3..11].copy_from_slice(b"EXFAT   ");
        b[108] = 30;
        assert!(Volume::open(&b, 0).is_err());
        b[108] = 9;
        b[109] = 0;
        b[92..96].copy_from_slice(&1000u32.to_le_bytes());
        b[96..100].copy_from_slice(&2u32.to_le_bytes());
        b[88..92].copy_from_slice(&4u32.to_le_bytes());
        b[80..84].copy_from_slice(&1u32.to_le_bytes());
        let v = Volume::open(&b, 0).expect("geometry parses");
        // The root cluster lies past the end of the buffer: an I/O error.
        assert!(v.is_empty(&b).is_err() || v.used_end(&b).is_err());
        assert!(Volume::open(&b[..100].to_vec(), 0).is_err());
    }
}
