//! exFAT.
//!
//! Per Microsoft's "exFAT file system specification" (2019). The used map is
//! the boot region and its backup (sectors 0..24), the FAT(s), the
//! allocation bitmap(s), up-case table and root directory (found through the
//! root directory's 0x81 / 0x82 entries; the root directory's cluster chain is
//! always in the FAT), and every cluster allocated in the bitmap.
//!
//! `used` in [`probe`] is a popcount of the allocation bitmap when it is at
//! most 16 MiB, otherwise `None`.

use super::bitmap::for_each_run;
use super::{
    add, bytes, le16, le32, le64, mul, read_vec, u8_at, utf16_label, FsError, FsInfo, FsKind, CHUNK,
};
use crate::extent::RunBuilder;
use crate::read_at::ReadAt;
use crate::Extent;

const KIND: &str = "exfat";
/// Bitmap sizes up to which [`probe`] computes `used`.
const PROBE_BITMAP_LIMIT: u64 = 16 << 20;
/// Root directory size we are willing to scan for the critical entries.
const MAX_ROOT_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone)]
pub(crate) struct Boot {
    pub sector_size: u64,
    pub cluster_size: u64,
    pub volume_bytes: u64,
    pub fat_offset: u64,
    pub fat_bytes: u64,
    pub num_fats: u64,
    pub heap_offset: u64,
    pub cluster_count: u64,
    pub root_cluster: u64,
    pub serial: u32,
    pub active_fat: u64,
}

fn corrupt(offset: u64, what: impl Into<String>) -> FsError {
    FsError::Corrupt {
        kind: KIND,
        offset,
        what: what.into(),
    }
}

impl Boot {
    pub(crate) fn parse(bs: &[u8]) -> Result<Option<Boot>, FsError> {
        if bytes(bs, 3, 8) != b"EXFAT   " {
            return Ok(None);
        }
        let bps_shift = u32::from(u8_at(bs, 0x6C));
        let spc_shift = u32::from(u8_at(bs, 0x6D));
        if !(9..=12).contains(&bps_shift) || bps_shift + spc_shift > 25 {
            return Err(corrupt(
                0x6C,
                format!("sector shift {bps_shift}, cluster shift {spc_shift}"),
            ));
        }
        let sector_size = 1u64 << bps_shift;
        let cluster_size = sector_size << spc_shift;
        let num_fats = u64::from(u8_at(bs, 0x6E));
        if !(1..=2).contains(&num_fats) {
            return Err(corrupt(0x6E, format!("{num_fats} FATs")));
        }
        let volume_sectors = le64(bs, 0x48);
        let fat_off = u64::from(le32(bs, 0x50));
        let fat_len = u64::from(le32(bs, 0x54));
        let heap_off = u64::from(le32(bs, 0x58));
        let cluster_count = u64::from(le32(bs, 0x5C));
        let root_cluster = u64::from(le32(bs, 0x60));
        let heap_sectors = cluster_count << spc_shift;
        if fat_off < 24
            || fat_len == 0
            || heap_off < fat_off + fat_len * num_fats
            || heap_off + heap_sectors > volume_sectors
            || (cluster_count + 2) * 4 > fat_len << bps_shift
            || volume_sectors >> (63 - bps_shift) != 0
        {
            return Err(corrupt(0x48, format!(
                "layout: {volume_sectors} sectors, FAT at {fat_off}+{fat_len}x{num_fats}, heap at {heap_off} with {cluster_count} clusters"
            )));
        }
        if root_cluster < 2 || root_cluster >= cluster_count + 2 {
            return Err(corrupt(
                0x60,
                format!("root directory cluster {root_cluster}"),
            ));
        }
        let active_fat = if num_fats == 2 {
            u64::from(le16(bs, 0x6A) & 1)
        } else {
            0
        };
        Ok(Some(Boot {
            sector_size,
            cluster_size,
            volume_bytes: volume_sectors << bps_shift,
            fat_offset: fat_off << bps_shift,
            fat_bytes: fat_len << bps_shift,
            num_fats,
            heap_offset: heap_off << bps_shift,
            cluster_count,
            root_cluster,
            serial: le32(bs, 0x64),
            active_fat,
        }))
    }

    fn cluster_offset(&self, c: u64) -> u64 {
        self.heap_offset + (c - 2) * self.cluster_size
    }

    fn valid_cluster(&self, c: u64) -> bool {
        c >= 2 && c < self.cluster_count + 2
    }
}

/// Follow a FAT chain from `first`, at most `max` clusters.
fn chain(dev: &dyn ReadAt, vol: &Boot, first: u64, max: u64) -> Result<Vec<u64>, FsError> {
    let fat = vol.fat_offset + vol.active_fat * vol.fat_bytes;
    let mut out = Vec::new();
    let mut c = first;
    loop {
        if !vol.valid_cluster(c) {
            return Err(FsError::BadCluster {
                kind: KIND,
                cluster: c,
                what: "cluster chain leaves the heap".into(),
            });
        }
        if out.len() as u64 >= max {
            return Err(FsError::BadCluster {
                kind: KIND,
                cluster: first,
                what: format!("cluster chain longer than {max} clusters (loop?)"),
            });
        }
        out.push(c);
        let mut e = [0u8; 4];
        super::read_at(dev, &mut e, fat + c * 4)?;
        let next = u64::from(u32::from_le_bytes(e));
        if next >= 0xFFFF_FFF8 {
            return Ok(out);
        }
        c = next;
    }
}

/// Clusters of a critical stream (bitmap, up-case table): `len` bytes from
/// `first`, via the FAT. A stream whose FAT entries are free (as some
/// formatters leave them for contiguous system files) is taken as contiguous.
fn stream_clusters(
    dev: &dyn ReadAt,
    vol: &Boot,
    first: u64,
    len: u64,
) -> Result<Vec<(u64, u64)>, FsError> {
    let n = len.div_ceil(vol.cluster_size).max(1);
    if !vol.valid_cluster(first) || first + n > vol.cluster_count + 2 {
        return Err(FsError::BadCluster {
            kind: KIND,
            cluster: first,
            what: format!("stream of {len} bytes does not fit the heap"),
        });
    }
    let mut e = [0u8; 4];
    super::read_at(
        dev,
        &mut e,
        vol.fat_offset + vol.active_fat * vol.fat_bytes + first * 4,
    )?;
    if u32::from_le_bytes(e) == 0 {
        return Ok(vec![(first, n)]);
    }
    let cl = chain(dev, vol, first, n)?;
    if (cl.len() as u64) < n {
        return Err(FsError::BadCluster {
            kind: KIND,
            cluster: first,
            what: format!("chain of {} clusters for {len} bytes", cl.len()),
        });
    }
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for c in cl {
        match runs.last_mut() {
            Some((s, k)) if *s + *k == c => *k += 1,
            _ => runs.push((c, 1)),
        }
    }
    Ok(runs)
}

/// What the root directory tells us.
#[derive(Debug, Default)]
struct Root {
    /// Root directory clusters.
    clusters: Vec<u64>,
    /// (first cluster, bytes, flags) of each allocation bitmap entry.
    bitmaps: Vec<(u64, u64, u8)>,
    upcase: Option<(u64, u64)>,
    label: Option<String>,
}

fn read_root(dev: &dyn ReadAt, vol: &Boot) -> Result<Root, FsError> {
    let max = (MAX_ROOT_BYTES / vol.cluster_size).max(1);
    let clusters = chain(dev, vol, vol.root_cluster, max)?;
    let mut root = Root {
        clusters,
        ..Root::default()
    };
    'outer: for &c in &root.clusters {
        let dir = read_vec(dev, vol.cluster_offset(c), vol.cluster_size, 32 << 20, KIND)?;
        for e in dir.chunks_exact(32) {
            match e[0] {
                0x00 => break 'outer,
                0x81 => root
                    .bitmaps
                    .push((u64::from(le32(e, 20)), le64(e, 24), e[1])),
                0x82 => root.upcase = Some((u64::from(le32(e, 20)), le64(e, 24))),
                0x83 => {
                    let n = usize::from(e[1]).min(11);
                    root.label = utf16_label(bytes(e, 2, 2 * n));
                }
                _ => {}
            }
        }
    }
    Ok(root)
}

/// The allocation bitmap for the active FAT (TexFAT keeps two).
fn active_bitmap(vol: &Boot, root: &Root) -> Result<(u64, u64), FsError> {
    let want = u8::from(vol.active_fat == 1);
    let b = root
        .bitmaps
        .iter()
        .find(|b| b.2 & 1 == want)
        .or(root.bitmaps.first())
        .ok_or_else(|| {
            corrupt(
                vol.cluster_offset(vol.root_cluster),
                "no allocation bitmap entry in the root directory",
            )
        })?;
    let need = vol.cluster_count.div_ceil(8);
    if b.1 < need {
        return Err(corrupt(
            vol.cluster_offset(vol.root_cluster),
            format!("allocation bitmap of {} bytes, {need} needed", b.1),
        ));
    }
    Ok((b.0, need))
}

/// Walk the allocation bitmap in chunks: `f(first_cluster, count)` per run.
fn for_each_used_run(
    dev: &dyn ReadAt,
    vol: &Boot,
    first: u64,
    need: u64,
    mut f: impl FnMut(u64, u64),
) -> Result<(), FsError> {
    let runs = stream_clusters(dev, vol, first, need)?;
    let mut bit_base = 0u64; // bitmap bit of the current run's first byte
    for (c, n) in runs {
        let run_bytes = n * vol.cluster_size;
        let mut off = 0u64;
        while off < run_bytes && bit_base + off * 8 < vol.cluster_count {
            let k = (run_bytes - off)
                .min(CHUNK)
                .min(need - (bit_base / 8 + off));
            let buf = read_vec(dev, vol.cluster_offset(c) + off, k, CHUNK, KIND)?;
            let first_bit = bit_base + off * 8;
            let nbits = (vol.cluster_count - first_bit).min(k * 8);
            // Bit i is cluster i + 2.
            for_each_run(&buf, nbits, first_bit + 2, &mut f);
            off += k;
        }
        bit_base += run_bytes * 8;
    }
    Ok(())
}

pub(crate) fn probe(dev: &dyn ReadAt, len: u64, head: &[u8]) -> Result<Option<FsInfo>, FsError> {
    let Some(vol) = Boot::parse(head)? else {
        return Ok(None);
    };
    let (label, used) = match read_root(dev, &vol) {
        Ok(root) => {
            let used = active_bitmap(&vol, &root)
                .ok()
                .filter(|b| b.1 <= PROBE_BITMAP_LIMIT && vol.volume_bytes <= len)
                .and_then(|(first, need)| {
                    let mut n = 0;
                    for_each_used_run(dev, &vol, first, need, |_, k| n += k).ok()?;
                    Some(n * vol.cluster_size)
                });
            (root.label, used)
        }
        Err(e) => {
            tracing::debug!(error = %e, "exfat: cannot read the root directory while probing");
            (None, None)
        }
    };
    Ok(Some(FsInfo {
        kind: FsKind::Exfat,
        label,
        uuid: Some(format!(
            "{:04X}-{:04X}",
            vol.serial >> 16,
            vol.serial & 0xFFFF
        )),
        block_size: vol.cluster_size as u32,
        size: vol.volume_bytes,
        used,
        sector_size: Some(vol.sector_size as u32),
    }))
}

pub(crate) fn used_extents(dev: &dyn ReadAt, len: u64) -> Result<Vec<Extent>, FsError> {
    let head = read_vec(dev, 0, 512.min(len), 512, KIND)?;
    let vol = Boot::parse(&head)?.ok_or_else(|| corrupt(0, "no exFAT boot sector"))?;
    let heap_end = add(
        KIND,
        0,
        vol.heap_offset,
        mul(KIND, 0, vol.cluster_count, vol.cluster_size)?,
    )?;
    if heap_end > len || 24 * vol.sector_size > len {
        return Err(corrupt(
            0x48,
            format!("the cluster heap ends at byte {heap_end}, past the partition ({len} bytes)"),
        ));
    }
    let root = read_root(dev, &vol)?;
    let (bm_first, bm_len) = active_bitmap(&vol, &root)?;
    let cs = vol.cluster_size;
    let mut runs = RunBuilder::new();
    // Main and backup boot regions (12 sectors each), then the FAT(s).
    runs.add(0, 24 * vol.sector_size);
    runs.add(vol.fat_offset, vol.fat_bytes * vol.num_fats);
    for_each_used_run(dev, &vol, bm_first, bm_len, |c, n| {
        runs.add(vol.cluster_offset(c), n * cs)
    })?;
    let mut v = runs.finish(len);
    // The critical streams are allocated in the bitmap; add them regardless.
    let mut streams: Vec<(u64, u64)> = root.bitmaps.iter().map(|b| (b.0, b.1)).collect();
    streams.extend(root.upcase);
    for (first, bytes) in streams {
        for (c, n) in stream_clusters(dev, &vol, first, bytes)? {
            v.push(Extent::new(vol.cluster_offset(c), n * cs));
        }
    }
    for &c in &root.clusters {
        v.push(Extent::new(vol.cluster_offset(c), cs));
    }
    Ok(crate::extent::normalize(v, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::total;
    use crate::fs::testutil::{fixture, probe_fixture};
    use crate::fs::{probe as probe_any, used_extents as used_any};

    fn check(name: &str, sector: u32) -> (Vec<u8>, FsInfo, Vec<Extent>) {
        let (img, info, v) = probe_fixture(name, FsKind::Exfat, Some(sector));
        let len = img.len() as u64;
        let used = info.used.expect("used");
        let meta = 24 * u64::from(sector) + 2 * (1 << 20);
        assert!(
            total(&v) >= used && total(&v) <= used + meta,
            "{name}: {} vs {used}",
            total(&v)
        );
        assert!(total(&v) < len / 2);
        (img, info, v)
    }

    #[test]
    fn exfat_512() {
        check("exfat.img", 512);
    }

    #[test]
    fn exfat_4k_sectors() {
        check("exfat-4k.img", 4096);
    }

    #[test]
    fn corrupt_inputs_are_errors() {
        let img = fixture("exfat.img");
        let len = img.len() as u64;
        let info = probe_any(&img, len).expect("probe").expect("exfat");
        for (off, v) in [
            (0x6C, 20u8),
            (0x6E, 0),
            (0x5F, 0x7F),
            (0x63, 0x7F),
            (0x57, 0x7F),
        ] {
            let mut bad = img.clone();
            bad[off] = v;
            assert!(probe_any(&bad, len).is_err(), "offset {off:#x}");
            assert!(used_any(&bad, len, &info).is_err(), "offset {off:#x}");
        }
        // Root directory chain loops onto itself.
        let vol = Boot::parse(&img[..512]).expect("parse").expect("exfat");
        let mut bad = img.clone();
        let e = (vol.fat_offset + vol.root_cluster * 4) as usize;
        bad[e..e + 4].copy_from_slice(&(vol.root_cluster as u32).to_le_bytes());
        assert!(matches!(
            used_any(&bad, len, &info),
            Err(FsError::BadCluster { .. })
        ));
        let short = img[..img.len() / 2].to_vec();
        assert!(used_any(&short, short.len() as u64, &info).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut img = fixture("exfat.img");
        let len = img.len() as u64;
        let info = probe_any(&img, len).expect("probe").expect("exfat");
        let vol = Boot::parse(&img[..512]).expect("parse").expect("exfat");
        let root = vol.cluster_offset(vol.root_cluster) as usize;
        let fat = vol.fat_offset as usize;
        crate::fs::testutil::fuzz(
            &mut img,
            &[(0x40, 0x40), (root, 256), (fat, 64)],
            400,
            |bad| {
                let _ = probe_any(&bad, len);
                let _ = used_any(&bad, len, &info);
            },
        );
    }
}
