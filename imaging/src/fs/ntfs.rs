//! NTFS: boot sector, `$MFT` records, `$Bitmap`.
//!
//! Structures as documented by the Linux-NTFS project ("NTFS Documentation",
//! Richard Russon) and implemented by ntfs-3g (`layout.h`, `runlist.c`,
//! `mst.c`). The used map is every cluster set in `$Bitmap` (record 6), plus,
//! to be safe even if the bitmap were stale, the boot sector area (`$Boot`,
//! 8 KiB), the backup boot sector (the sector just past the volume's last
//! sector, which is the partition's last sector), and the whole `$MFT` and
//! `$MFTMirr` per their runlists.
//!
//! MFT records are read with their update sequence array applied (the
//! "fixups", one per 512-byte stride). Non-resident attributes are decoded
//! from their mapping pairs, including sparse runs, and followed through an
//! `$ATTRIBUTE_LIST` into extension records.
//!
//! `used` in [`probe`] comes from a popcount of `$Bitmap` when it is at most
//! [`PROBE_BITMAP_LIMIT`] bytes (volumes up to 512 GiB with 4 KiB clusters), so
//! listing disks stays fast; otherwise it is `None`.

use super::bitmap::for_each_run;
use super::{
    bytes, le16, le32, le64, mul, read_at, read_vec, u8_at, utf16_label, FsError, FsInfo, FsKind,
    CHUNK,
};
use crate::extent::RunBuilder;
use crate::read_at::ReadAt;
use crate::Extent;

const KIND: &str = "ntfs";
const AT_ATTRIBUTE_LIST: u32 = 0x20;
const AT_VOLUME_NAME: u32 = 0x60;
const AT_DATA: u32 = 0x80;
const AT_END: u32 = 0xFFFF_FFFF;
const MFT_RECORD_MFT: u64 = 0;
const MFT_RECORD_MFTMIRR: u64 = 1;
const MFT_RECORD_VOLUME: u64 = 3;
const MFT_RECORD_BITMAP: u64 = 6;
/// Largest number of runs we accept for one attribute.
const MAX_RUNS: usize = 1 << 20;
/// `$Bitmap` sizes up to which [`probe`] computes `used`.
const PROBE_BITMAP_LIMIT: u64 = 16 << 20;

/// The boot sector, validated.
#[derive(Debug, Clone)]
pub(crate) struct Boot {
    pub bytes_per_sector: u64,
    pub cluster_size: u64,
    pub total_sectors: u64,
    pub nr_clusters: u64,
    pub mft_lcn: u64,
    pub mftmirr_lcn: u64,
    pub record_size: u64,
    pub serial: u64,
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
        if bytes(bs, 3, 8) != b"NTFS    " {
            return Ok(None);
        }
        let bps = u64::from(le16(bs, 0x0B));
        if !matches!(bps, 256 | 512 | 1024 | 2048 | 4096) {
            return Err(corrupt(0x0B, format!("{bps} bytes per sector")));
        }
        let raw = u8_at(bs, 0x0D);
        let spc = if raw <= 0x80 {
            u64::from(raw)
        } else if raw >= 0xE0 {
            // Clusters above 64 KiB are stored as a negative power of two.
            1u64 << (256 - u32::from(raw))
        } else {
            0
        };
        if spc == 0 || !spc.is_power_of_two() {
            return Err(corrupt(0x0D, format!("sectors per cluster byte {raw:#x}")));
        }
        let cluster_size = bps * spc;
        if cluster_size > 2 << 20 {
            return Err(corrupt(0x0D, format!("{cluster_size}-byte clusters")));
        }
        let total_sectors = le64(bs, 0x28);
        // Every byte offset below is derived from this; keep it in range.
        if total_sectors
            .checked_add(1)
            .and_then(|n| n.checked_mul(bps))
            .is_none()
        {
            return Err(corrupt(0x28, format!("{total_sectors} sectors")));
        }
        let nr_clusters = total_sectors / spc;
        if nr_clusters == 0 {
            return Err(corrupt(0x28, "zero clusters"));
        }
        let mft_lcn = le64(bs, 0x30);
        let mftmirr_lcn = le64(bs, 0x38);
        if mft_lcn >= nr_clusters || mftmirr_lcn >= nr_clusters {
            return Err(corrupt(
                0x30,
                format!("$MFT at cluster {mft_lcn} / $MFTMirr at {mftmirr_lcn} of {nr_clusters}"),
            ));
        }
        let record_size = record_size(u8_at(bs, 0x40), cluster_size)
            .ok_or_else(|| corrupt(0x40, format!("MFT record size byte {:#x}", u8_at(bs, 0x40))))?;
        Ok(Some(Boot {
            bytes_per_sector: bps,
            cluster_size,
            total_sectors,
            nr_clusters,
            mft_lcn,
            mftmirr_lcn,
            record_size,
            serial: le64(bs, 0x48),
        }))
    }
}

/// Size of a record whose size byte is `raw`: clusters if positive, else
/// `2^-raw` bytes. Only 256..=64 KiB powers of two are accepted.
fn record_size(raw: u8, cluster_size: u64) -> Option<u64> {
    let v = raw as i8;
    let size = if v > 0 {
        cluster_size.checked_mul(v as u64)?
    } else {
        1u64.checked_shl(u32::from(v.unsigned_abs()))?
    };
    (size.is_power_of_two() && (256..=65536).contains(&size)).then_some(size)
}

/// One run of a non-resident attribute: `len` clusters from `vcn`, stored at
/// `lcn` (None: sparse, reads as zeroes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub vcn: u64,
    pub len: u64,
    pub lcn: Option<u64>,
}

/// Decode mapping pairs starting at `b[off..]`, VCNs from `first_vcn`.
fn decode_runs(
    b: &[u8],
    off: usize,
    first_vcn: u64,
    vol: &Boot,
    out: &mut Vec<Run>,
) -> Result<(), FsError> {
    let bad = |what: String| corrupt(0, format!("runlist: {what}"));
    let mut p = off;
    let mut vcn = first_vcn;
    let mut lcn: i64 = 0;
    loop {
        let h = *b
            .get(p)
            .ok_or_else(|| bad("runs past the attribute".into()))?;
        if h == 0 {
            return Ok(());
        }
        let (nl, no) = (usize::from(h & 0x0F), usize::from(h >> 4));
        if nl == 0 || nl > 8 || no > 8 {
            return Err(bad(format!("header byte {h:#x}")));
        }
        let field = b
            .get(p + 1..p + 1 + nl + no)
            .ok_or_else(|| bad("runs past the attribute".into()))?;
        let mut len = 0u64;
        for (i, &x) in field[..nl].iter().enumerate() {
            len |= u64::from(x) << (8 * i);
        }
        if len == 0 || len > vol.nr_clusters.max(1 << 40) || len >> 62 != 0 {
            return Err(bad(format!("run length {len}")));
        }
        let run_lcn = if no == 0 {
            None
        } else {
            // Signed, relative to the previous run's LCN.
            let mut d: i64 = 0;
            for (i, &x) in field[nl..].iter().enumerate() {
                d |= i64::from(x) << (8 * i);
            }
            let shift = 64 - 8 * no as u32;
            if shift < 64 {
                d = (d << shift) >> shift;
            }
            lcn = lcn
                .checked_add(d)
                .ok_or_else(|| bad("LCN overflow".into()))?;
            let l = u64::try_from(lcn).map_err(|_| bad(format!("negative LCN {lcn}")))?;
            if !matches!(l.checked_add(len), Some(e) if e <= vol.nr_clusters) {
                return Err(bad(format!(
                    "run at cluster {l} + {len} is past the volume"
                )));
            }
            Some(l)
        };
        if out.len() >= MAX_RUNS {
            return Err(FsError::TooLarge {
                kind: KIND,
                what: "runlist",
                size: out.len() as u64,
                limit: MAX_RUNS as u64,
            });
        }
        if vcn
            .checked_add(len)
            .and_then(|e| e.checked_mul(vol.cluster_size))
            .is_none()
        {
            return Err(bad(format!(
                "run at VCN {vcn} + {len} is beyond any file size"
            )));
        }
        out.push(Run {
            vcn,
            len,
            lcn: run_lcn,
        });
        vcn = vcn
            .checked_add(len)
            .ok_or_else(|| bad("VCN overflow".into()))?;
        p += 1 + nl + no;
    }
}

/// A parsed attribute header (the parts we use).
pub(crate) struct Attr<'a> {
    pub ty: u32,
    pub non_resident: bool,
    pub name_len: u8,
    pub raw: &'a [u8],
}

impl Attr<'_> {
    pub(crate) fn resident_value(&self) -> Option<&[u8]> {
        let len = le32(self.raw, 0x10) as usize;
        let off = usize::from(le16(self.raw, 0x14));
        self.raw.get(off..off.checked_add(len)?)
    }
}

/// Iterate the attributes of a fixed-up MFT record.
pub(crate) fn attrs(rec: &[u8], rec_offset: u64) -> Result<Vec<Attr<'_>>, FsError> {
    let used = (le32(rec, 0x18) as usize).min(rec.len());
    let mut p = usize::from(le16(rec, 0x14));
    let mut out = Vec::new();
    while p + 8 <= used {
        let ty = le32(rec, p);
        if ty == AT_END {
            return Ok(out);
        }
        let len = le32(rec, p + 4) as usize;
        if len < 0x18 || len & 7 != 0 || p + len > used {
            return Err(corrupt(
                rec_offset + p as u64,
                format!("attribute {ty:#x} of length {len}"),
            ));
        }
        let raw = &rec[p..p + len];
        out.push(Attr {
            ty,
            non_resident: u8_at(raw, 8) != 0,
            name_len: u8_at(raw, 9),
            raw,
        });
        p += len;
    }
    Err(corrupt(rec_offset, "attribute list not terminated"))
}

/// Apply the update sequence array of one multi-sector record in place.
pub(crate) fn apply_fixups(rec: &mut [u8], rec_offset: u64) -> Result<(), FsError> {
    fixups(rec, rec_offset, b"FILE", "MFT record")
}

/// Apply the update sequence array of a multi-sector structure whose magic
/// must be `magic` (`FILE` for MFT records, `INDX` for index blocks).
pub(crate) fn fixups(rec: &mut [u8], rec_offset: u64, magic: &[u8; 4], what: &str) -> Result<(), FsError> {
    if bytes(rec, 0, 4) != magic {
        return Err(corrupt(rec_offset, format!("{what} without {} magic", String::from_utf8_lossy(magic))));
    }
    let usa_ofs = usize::from(le16(rec, 4));
    let usa_count = usize::from(le16(rec, 6));
    if usa_count < 2
        || (usa_count - 1) * 512 != rec.len()
        || usa_ofs & 1 != 0
        || usa_ofs + usa_count * 2 > rec.len()
    {
        return Err(corrupt(
            rec_offset,
            format!("update sequence array at {usa_ofs}, {usa_count} entries"),
        ));
    }
    let usn = [rec[usa_ofs], rec[usa_ofs + 1]];
    for i in 1..usa_count {
        let end = i * 512;
        if rec[end - 2..end] != usn {
            return Err(corrupt(
                rec_offset + end as u64 - 2,
                "update sequence mismatch (torn write)",
            ));
        }
        let fix = [rec[usa_ofs + 2 * i], rec[usa_ofs + 2 * i + 1]];
        rec[end - 2..end].copy_from_slice(&fix);
    }
    Ok(())
}

/// Read `buf.len()` bytes at byte `off` of a non-resident stream.
pub(crate) fn read_stream(
    dev: &dyn ReadAt,
    vol: &Boot,
    runs: &[Run],
    off: u64,
    buf: &mut [u8],
) -> Result<(), FsError> {
    let cs = vol.cluster_size;
    let overflow = |what: &str| corrupt(0, format!("stream offset overflows ({what}): the runlist is corrupt"));
    let mut done = 0usize;
    while done < buf.len() {
        let pos = off.checked_add(done as u64).ok_or_else(|| overflow("position"))?;
        let vcn = pos / cs;
        // Runs are in VCN order: find the first that ends past `vcn`.
        let i = runs.partition_point(|r| r.vcn.saturating_add(r.len) <= vcn);
        let run = runs
            .get(i)
            .filter(|r| vcn >= r.vcn && r.vcn.checked_add(r.len).is_some_and(|end| vcn < end))
            .ok_or_else(|| {
                corrupt(
                    0,
                    format!("stream offset {pos} is not mapped by the runlist"),
                )
            })?;
        let run_end = (run.vcn + run.len).checked_mul(cs).ok_or_else(|| overflow("run end"))?;
        let n = (run_end.saturating_sub(pos) as usize).min(buf.len() - done);
        if n == 0 {
            return Err(overflow("empty run"));
        }
        let dst = &mut buf[done..done + n];
        match run.lcn {
            None => dst.fill(0),
            Some(lcn) => {
                let at = lcn
                    .checked_add(vcn - run.vcn)
                    .and_then(|c| c.checked_mul(cs))
                    .and_then(|b| b.checked_add(pos % cs))
                    .ok_or_else(|| overflow("cluster"))?;
                read_at(dev, dst, at)?
            }
        }
        done += n;
    }
    Ok(())
}

/// Read MFT record `no` through the `$MFT` runlist, fixed up.
pub(crate) fn read_record(dev: &dyn ReadAt, vol: &Boot, mft: &[Run], no: u64) -> Result<Vec<u8>, FsError> {
    let mut rec = vec![0u8; vol.record_size as usize];
    let off = mul(KIND, 0, no, vol.record_size)?;
    read_stream(dev, vol, mft, off, &mut rec)?;
    apply_fixups(&mut rec, off)?;
    if le16(&rec, 0x16) & 0x0001 == 0 {
        return Err(corrupt(off, format!("MFT record {no} is not in use")));
    }
    Ok(rec)
}

/// One attribute's value: inline in its record, or clusters on the volume.
#[derive(Debug, Clone)]
pub(crate) enum Stream {
    Resident(Vec<u8>),
    NonResident {
        runs: Vec<Run>,
        /// Logical size in bytes.
        size: u64,
        /// Bytes written so far (the "valid data length"): the rest reads as zeroes.
        init: u64,
        /// Attribute flags: 0x0001 compressed, 0x4000 encrypted, 0x8000 sparse.
        flags: u16,
        /// log2 of the clusters per compression unit (compressed streams).
        compression_unit: u8,
    },
}

/// Does the attribute name stored as `name_len` UTF-16 units at `b[off..]` equal `want`?
fn name_is(b: &[u8], off: usize, name_len: usize, want: &str) -> bool {
    let Some(raw) = b.get(off..off + 2 * name_len) else {
        return false;
    };
    let units = raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
    units.eq(want.encode_utf16())
}

impl Attr<'_> {
    fn named(&self, want: &str) -> bool {
        name_is(self.raw, usize::from(le16(self.raw, 0x0A)), usize::from(self.name_len), want)
    }
}

/// The complete runlist of the unnamed `$DATA` of a file, following an
/// `$ATTRIBUTE_LIST` into extension records; plus the data size in bytes.
/// `mft` is the `$MFT` runlist (None while reading `$MFT` itself, whose base
/// record's own runs are then used to find its extension records).
fn data_runs(
    dev: &dyn ReadAt,
    vol: &Boot,
    base: &[u8],
    base_no: u64,
    mft: Option<&[Run]>,
) -> Result<(Vec<Run>, u64), FsError> {
    match stream(dev, vol, base, base_no, mft, AT_DATA, "")? {
        Some(Stream::NonResident { runs, size, .. }) => Ok((runs, size)),
        _ => Err(corrupt(base_no * vol.record_size, "no non-resident $DATA attribute")),
    }
}

/// The attribute of type `ty` named `name` ("" for unnamed) of the file
/// whose base record is `base`, following an `$ATTRIBUTE_LIST` into
/// extension records; None when the file has no such attribute.
pub(crate) fn stream(
    dev: &dyn ReadAt,
    vol: &Boot,
    base: &[u8],
    base_no: u64,
    mft: Option<&[Run]>,
    ty: u32,
    name: &str,
) -> Result<Option<Stream>, FsError> {
    let base_off = base_no * vol.record_size;
    let mut pieces: Vec<Piece> = Vec::new();
    if let Some(v) = collect(vol, base, base_off, ty, name, &mut pieces)? {
        return Ok(Some(Stream::Resident(v)));
    }
    let list = attrs(base, base_off)?
        .into_iter()
        .find(|a| a.ty == AT_ATTRIBUTE_LIST)
        .map(|a| -> Result<Vec<u8>, FsError> {
            if a.non_resident {
                let mut runs = Vec::new();
                decode_runs(a.raw, usize::from(le16(a.raw, 0x20)), 0, vol, &mut runs)?;
                let size = le64(a.raw, 0x30);
                if size > CHUNK {
                    return Err(FsError::TooLarge {
                        kind: KIND,
                        what: "$ATTRIBUTE_LIST",
                        size,
                        limit: CHUNK,
                    });
                }
                let mut v = vec![0u8; size as usize];
                read_stream(dev, vol, &runs, 0, &mut v)?;
                Ok(v)
            } else {
                Ok(a.resident_value().unwrap_or(&[]).to_vec())
            }
        });
    if let Some(list) = list {
        let list = list?;
        let mut p = 0usize;
        let mut seen = std::collections::BTreeSet::new();
        while p + 0x1A <= list.len() {
            let lty = le32(&list, p);
            let len = usize::from(le16(&list, p + 4));
            if len < 0x1A {
                return Err(corrupt(base_off, "attribute list entry too short"));
            }
            let rec_no = le64(&list, p + 0x10) & 0x0000_FFFF_FFFF_FFFF;
            let named = name_is(&list, p + usize::from(u8_at(&list, p + 7)), usize::from(u8_at(&list, p + 6)), name);
            if lty == ty && named && rec_no != base_no && seen.insert(rec_no) {
                let mut known: Vec<Run> = pieces
                    .iter()
                    .flat_map(|p| p.runs.iter().copied())
                    .collect();
                known.sort_by_key(|r| r.vcn);
                let mft_runs = mft.unwrap_or(&known);
                let ext = read_record(dev, vol, mft_runs, rec_no)?;
                // An extension record names its base record (ntfs-3g checks
                // the same): anything else is a stale or corrupt list.
                let owner = le64(&ext, 0x20) & 0x0000_FFFF_FFFF_FFFF;
                if owner != base_no {
                    return Err(corrupt(
                        rec_no * vol.record_size,
                        format!(
                            "extension record {rec_no} belongs to record {owner}, not {base_no}"
                        ),
                    ));
                }
                if let Some(v) = collect(vol, &ext, rec_no * vol.record_size, ty, name, &mut pieces)? {
                    return Ok(Some(Stream::Resident(v)));
                }
            }
            p += len;
        }
    }
    if pieces.is_empty() {
        return Ok(None);
    }
    pieces.sort_by_key(|p| p.low);
    let first = pieces
        .iter()
        .find(|p| p.low == 0)
        .ok_or_else(|| corrupt(base_off, format!("attribute {ty:#x} has no first extent")))?;
    let (size, init, flags, compression_unit) = (first.size, first.init.min(first.size), first.flags, first.compression_unit);
    let mut runs = Vec::new();
    let mut next = 0u64;
    for p in pieces {
        if p.low != next {
            return Err(corrupt(
                base_off,
                format!("attribute {ty:#x} extents leave a hole at VCN {next}"),
            ));
        }
        next = p.runs.last().map_or(p.low, |l| l.vcn + l.len);
        runs.extend(p.runs);
    }
    // Compressed streams may end in a sparse tail not in the runlist.
    if flags & 0x0001 == 0 && !matches!(next.checked_mul(vol.cluster_size), Some(b) if b >= size) {
        return Err(corrupt(
            base_off,
            format!("runlist ({next} clusters) shorter than the data ({size} bytes)"),
        ));
    }
    Ok(Some(Stream::NonResident { runs, size, init, flags, compression_unit }))
}

/// One extent of a non-resident attribute, from one record.
struct Piece {
    low: u64,
    runs: Vec<Run>,
    size: u64,
    init: u64,
    flags: u16,
    compression_unit: u8,
}

/// Gather the extents of attribute `ty`/`name` in one record; a resident
/// one is returned at once.
fn collect(
    vol: &Boot,
    rec: &[u8],
    rec_off: u64,
    ty: u32,
    name: &str,
    out: &mut Vec<Piece>,
) -> Result<Option<Vec<u8>>, FsError> {
    for a in attrs(rec, rec_off)? {
        if a.ty != ty || !a.named(name) {
            continue;
        }
        if !a.non_resident {
            return Ok(Some(a.resident_value().unwrap_or(&[]).to_vec()));
        }
        if a.raw.len() < 0x40 {
            continue;
        }
        let low = le64(a.raw, 0x10);
        let mut runs = Vec::new();
        decode_runs(a.raw, usize::from(le16(a.raw, 0x20)), low, vol, &mut runs)?;
        out.push(Piece { low, runs, size: le64(a.raw, 0x30), init: le64(a.raw, 0x38), flags: le16(a.raw, 0x0C), compression_unit: u8_at(a.raw, 0x22) });
    }
    Ok(None)
}

/// The `$MFT` runlist, starting from record 0 at the boot sector's LCN.
pub(crate) fn mft_runs(dev: &dyn ReadAt, vol: &Boot) -> Result<Vec<Run>, FsError> {
    let first = [Run {
        vcn: 0,
        len: vol.record_size.div_ceil(vol.cluster_size),
        lcn: Some(vol.mft_lcn),
    }];
    let rec0 = read_record(dev, vol, &first, MFT_RECORD_MFT)?;
    Ok(data_runs(dev, vol, &rec0, MFT_RECORD_MFT, None)?.0)
}

pub(crate) fn volume_label(dev: &dyn ReadAt, vol: &Boot, mft: &[Run]) -> Option<String> {
    let rec = read_record(dev, vol, mft, MFT_RECORD_VOLUME).ok()?;
    let a = attrs(&rec, 0)
        .ok()?
        .into_iter()
        .find(|a| a.ty == AT_VOLUME_NAME && !a.non_resident)?;
    utf16_label(a.resident_value()?)
}

/// Every cluster of the non-resident `$DATA` streams (named ones too) of a
/// fixed-up MFT record, as device byte ranges. `None` when the record holds
/// what a comparison of records must not vouch for: other non-resident
/// attributes (index blocks, bitmaps), an `$ATTRIBUTE_LIST` (attributes in
/// other records), compressed or encrypted data.
pub(crate) fn plain_data_clusters(vol: &Boot, rec: &[u8], rec_off: u64) -> Result<Option<Vec<Extent>>, FsError> {
    let mut out = Vec::new();
    for a in attrs(rec, rec_off)? {
        if a.ty == AT_ATTRIBUTE_LIST {
            return Ok(None);
        }
        if !a.non_resident {
            continue;
        }
        if a.ty != AT_DATA || a.raw.len() < 0x40 || le16(a.raw, 0x0C) & 0x4001 != 0 {
            return Ok(None);
        }
        let mut runs = Vec::new();
        decode_runs(a.raw, usize::from(le16(a.raw, 0x20)), le64(a.raw, 0x10), vol, &mut runs)?;
        out.extend(runs.iter().filter_map(|r| r.lcn.map(|l| Extent::new(l * vol.cluster_size, r.len * vol.cluster_size))));
    }
    Ok(Some(out))
}

/// Why the clusters on the device may not show the volume's last state, if
/// so: the dirty bit of `$Volume`, or a `$LogFile` whose restart area says
/// the volume is still in use (Windows hibernated or Fast Startup, a crash).
pub(crate) fn unclean(dev: &dyn ReadAt, vol: &Boot, mft: &[Run]) -> Option<String> {
    const AT_VOLUME_INFORMATION: u32 = 0x70;
    const MFT_RECORD_LOGFILE: u64 = 2;
    let volume = || -> Result<Option<String>, FsError> {
        let rec = read_record(dev, vol, mft, MFT_RECORD_VOLUME)?;
        let info = attrs(&rec, MFT_RECORD_VOLUME * vol.record_size)?.into_iter().find(|a| a.ty == AT_VOLUME_INFORMATION && !a.non_resident).and_then(|a| a.resident_value().map(<[u8]>::to_vec));
        match info {
            Some(v) if v.len() >= 12 => Ok((le16(&v, 0x0A) & 0x0001 != 0).then(|| "it is marked dirty (not cleanly unmounted)".to_string())),
            _ => Ok(Some("its $Volume record has no volume information".into())),
        }
    };
    match volume() {
        Ok(Some(why)) => return Some(why),
        Ok(None) => {}
        Err(e) => return Some(format!("its $Volume record cannot be read ({e})")),
    }
    let log = || -> Result<Option<String>, FsError> {
        let rec = read_record(dev, vol, mft, MFT_RECORD_LOGFILE)?;
        let (runs, size) = data_runs(dev, vol, &rec, MFT_RECORD_LOGFILE, Some(mft))?;
        let mut page = vec![0u8; 4096.min(size) as usize];
        read_stream(dev, vol, &runs, 0, &mut page)?;
        // ntfs-3g and mkntfs leave an emptied log: all 0xFF.
        if page.iter().all(|&b| b == 0xFF) {
            return Ok(None);
        }
        if bytes(&page, 0, 4) != b"RSTR" {
            return Ok(Some("its $LogFile has no readable restart page".into()));
        }
        let sys_page = (le32(&page, 0x10) as usize).min(page.len());
        fixups(&mut page[..sys_page], 0, b"RSTR", "$LogFile restart page")?;
        let ra = usize::from(le16(&page, 0x18));
        if ra + 0x10 > sys_page {
            return Ok(Some("its $LogFile restart area lies outside the page".into()));
        }
        let (in_use, flags) = (le16(&page, ra + 0x0C), le16(&page, ra + 0x0E));
        Ok((in_use != 0xFFFF || flags & 0x0002 == 0).then(|| "its $LogFile still holds changes (Windows hibernated, Fast Startup, or a crash)".to_string()))
    };
    match log() {
        Ok(why) => why,
        Err(e) => Some(format!("its $LogFile cannot be read ({e})")),
    }
}

/// Walk `$Bitmap` in chunks, calling `f(first_cluster, count)` per used run.
fn for_each_used_run(
    dev: &dyn ReadAt,
    vol: &Boot,
    mft: &[Run],
    mut f: impl FnMut(u64, u64),
) -> Result<(), FsError> {
    let rec = read_record(dev, vol, mft, MFT_RECORD_BITMAP)?;
    let (runs, size) = data_runs(dev, vol, &rec, MFT_RECORD_BITMAP, Some(mft))?;
    let need = vol.nr_clusters.div_ceil(8);
    if size < need {
        return Err(corrupt(
            MFT_RECORD_BITMAP * vol.record_size,
            format!("$Bitmap has {size} bytes, {need} needed"),
        ));
    }
    let mut buf = vec![0u8; need.min(CHUNK) as usize];
    let mut off = 0u64;
    while off < need {
        let n = (need - off).min(CHUNK);
        let chunk = &mut buf[..n as usize];
        read_stream(dev, vol, &runs, off, chunk)?;
        let nbits = (vol.nr_clusters - off * 8).min(n * 8);
        for_each_run(chunk, nbits, off * 8, &mut f);
        off += n;
    }
    Ok(())
}

pub(crate) fn probe(dev: &dyn ReadAt, len: u64, head: &[u8]) -> Result<Option<FsInfo>, FsError> {
    let Some(vol) = Boot::parse(head)? else {
        return Ok(None);
    };
    let size = vol
        .total_sectors
        .saturating_add(1)
        .saturating_mul(vol.bytes_per_sector);
    // Label and usage are extras: a damaged MFT still probes as NTFS.
    let (label, used) = match mft_runs(dev, &vol) {
        Ok(mft) => {
            let used = if vol.nr_clusters.div_ceil(8) <= PROBE_BITMAP_LIMIT
                && size <= len.saturating_add(vol.bytes_per_sector)
            {
                let mut n = 0u64;
                for_each_used_run(dev, &vol, &mft, |_, c| n += c)
                    .ok()
                    .map(|_| n * vol.cluster_size)
            } else {
                None
            };
            (volume_label(dev, &vol, &mft), used)
        }
        Err(e) => {
            tracing::debug!(error = %e, "ntfs: cannot read $MFT while probing");
            (None, None)
        }
    };
    Ok(Some(FsInfo {
        kind: FsKind::Ntfs,
        label,
        uuid: Some(format!("{:016X}", vol.serial)),
        block_size: vol.cluster_size as u32,
        size,
        used,
        sector_size: Some(vol.bytes_per_sector as u32),
    }))
}

pub(crate) fn used_extents(dev: &dyn ReadAt, len: u64) -> Result<Vec<Extent>, FsError> {
    let head = read_vec(dev, 0, 512.min(len), 512, KIND)?;
    let vol = Boot::parse(&head)?.ok_or_else(|| corrupt(0, "no NTFS boot sector"))?;
    let cs = vol.cluster_size;
    let vol_bytes = mul(KIND, 0x28, vol.total_sectors, vol.bytes_per_sector)?;
    if vol_bytes > len {
        return Err(corrupt(
            0x28,
            format!("the volume ({vol_bytes} bytes) is larger than its partition ({len} bytes)"),
        ));
    }
    let mft = mft_runs(dev, &vol)?;
    let mut runs = RunBuilder::new();
    for_each_used_run(dev, &vol, &mft, |c, n| runs.add(c * cs, n * cs))?;
    let mut v = runs.finish(len);
    // $Boot, and the backup boot sector: just past the volume's sectors, and
    // at the partition's last sector (the same sector on a standard layout).
    v.push(Extent::new(0, 8192));
    v.push(Extent::new(vol_bytes, vol.bytes_per_sector));
    v.push(Extent::new(
        len.saturating_sub(vol.bytes_per_sector),
        vol.bytes_per_sector,
    ));
    let mirr_rec = read_record(dev, &vol, &mft, MFT_RECORD_MFTMIRR)?;
    let (mirr, _) = data_runs(dev, &vol, &mirr_rec, MFT_RECORD_MFTMIRR, Some(&mft))?;
    for r in mft.iter().chain(mirr.iter()) {
        if let Some(lcn) = r.lcn {
            v.push(Extent::new(lcn * cs, r.len * cs));
        }
    }
    // The first records of $MFTMirr at the boot sector's LCN, whatever its runlist says.
    v.push(Extent::new(
        vol.mftmirr_lcn * cs,
        (4 * vol.record_size).max(cs),
    ));
    Ok(crate::extent::normalize(v, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::total;
    use crate::fs::testutil::{fixture, probe_fixture};
    use crate::fs::{probe as probe_any, used_extents as used_any};

    fn check(name: &str, sector: u32) -> (Vec<u8>, FsInfo, Vec<Extent>) {
        let (img, info, v) = probe_fixture(name, FsKind::Ntfs, Some(sector));
        let len = img.len() as u64;
        let used = info.used.expect("used");
        assert!(
            total(&v) >= used && total(&v) <= used + 64 * 1024,
            "{name}: {} vs {used}",
            total(&v)
        );
        assert!(total(&v) < len / 2);
        // Backup boot sector = last sector.
        assert_eq!(v.last().map(|e| e.end()), Some(len));
        (img, info, v)
    }

    #[test]
    fn ntfs_512() {
        check("ntfs.img", 512);
    }

    #[test]
    fn ntfs_4k_sectors() {
        check("ntfs-4k.img", 4096);
    }

    #[test]
    fn runlist_decoding() {
        let vol = Boot {
            bytes_per_sector: 512,
            cluster_size: 4096,
            total_sectors: 1 << 24,
            nr_clusters: 1 << 21,
            mft_lcn: 4,
            mftmirr_lcn: 8,
            record_size: 1024,
            serial: 0,
        };
        // 0x21: 1-byte length 0x18, 2-byte offset 0x5634; then a sparse run of
        // 0x10; then 0x11: length 8, offset -0x10 (0xF0); end.
        let b = [0x21, 0x18, 0x34, 0x56, 0x01, 0x10, 0x11, 0x08, 0xF0, 0x00];
        let mut runs = Vec::new();
        decode_runs(&b, 0, 0, &vol, &mut runs).expect("decode");
        assert_eq!(
            runs,
            vec![
                Run {
                    vcn: 0,
                    len: 0x18,
                    lcn: Some(0x5634)
                },
                Run {
                    vcn: 0x18,
                    len: 0x10,
                    lcn: None
                },
                Run {
                    vcn: 0x28,
                    len: 8,
                    lcn: Some(0x5624)
                },
            ]
        );
        // Truncated, negative LCN, run past the volume.
        assert!(decode_runs(&b[..5], 0, 0, &vol, &mut Vec::new()).is_err());
        assert!(decode_runs(&[0x11, 0x01, 0xFF, 0], 0, 0, &vol, &mut Vec::new()).is_err());
        assert!(decode_runs(
            &[0x31, 0x01, 0xFF, 0xFF, 0x7F, 0],
            0,
            0,
            &vol,
            &mut Vec::new()
        )
        .is_err());
        assert!(decode_runs(&[0x91, 0x01, 0], 0, 0, &vol, &mut Vec::new()).is_err());
    }

    /// Undo `apply_fixups`: put the update sequence number at the end of
    /// every 512-byte stride, saving the real bytes in the array.
    fn unfixup(rec: &mut [u8]) {
        let usa_ofs = usize::from(le16(rec, 4));
        let usa_count = usize::from(le16(rec, 6));
        let usn = [rec[usa_ofs], rec[usa_ofs + 1]];
        for i in 1..usa_count {
            let end = i * 512;
            let (a, b) = (rec[end - 2], rec[end - 1]);
            rec[usa_ofs + 2 * i] = a;
            rec[usa_ofs + 2 * i + 1] = b;
            rec[end - 2..end].copy_from_slice(&usn);
        }
    }

    /// `$Bitmap`'s `$DATA` moved into extension record 20, reached through an
    /// `$ATTRIBUTE_LIST` in record 6 (as on a volume whose runlists overflow
    /// their base record): the map must not change.
    #[test]
    fn data_through_attribute_list() {
        let img = fixture("ntfs.img");
        let len = img.len() as u64;
        let info = probe_any(&img, len).expect("probe").expect("ntfs");
        let want = used_any(&img, len, &info).expect("map");
        let vol = Boot::parse(&img[..512]).expect("parse").expect("ntfs");
        let mft = mft_runs(&img, &vol).expect("mft runs");
        assert_eq!(mft[0].vcn, 0);
        let rs = vol.record_size as usize;
        let mft_off = (mft[0].lcn.expect("mft lcn") * vol.cluster_size) as usize;
        let base = read_record(&img, &vol, &mft, MFT_RECORD_BITMAP).expect("record 6");
        let (data_at, data_len) = {
            let a = attrs(&base, 0)
                .expect("attrs")
                .into_iter()
                .find(|a| a.ty == AT_DATA)
                .expect("$DATA");
            let at = a.raw.as_ptr() as usize - base.as_ptr() as usize;
            (at, a.raw.len())
        };
        assert!(data_len >= 0x38);
        // Extension record 20: the same header, only $DATA + end marker.
        let first = usize::from(le16(&base, 0x14));
        let mut ext = base.clone();
        ext[first..first + data_len].copy_from_slice(&base[data_at..data_at + data_len]);
        ext[first + data_len..first + data_len + 4].copy_from_slice(&AT_END.to_le_bytes());
        let used = (first + data_len + 8) as u32;
        ext[0x18..0x1C].copy_from_slice(&used.to_le_bytes());
        ext[0x20..0x28].copy_from_slice(&(MFT_RECORD_BITMAP | 1 << 48).to_le_bytes()); // base ref
                                                                                       // Base record: the $DATA attribute becomes a resident $ATTRIBUTE_LIST.
        let mut b = base.clone();
        let a = &mut b[data_at..data_at + data_len];
        a.fill(0);
        a[0..4].copy_from_slice(&AT_ATTRIBUTE_LIST.to_le_bytes());
        a[4..8].copy_from_slice(&(data_len as u32).to_le_bytes());
        a[0x10..0x14].copy_from_slice(&0x20u32.to_le_bytes()); // value length
        a[0x14..0x16].copy_from_slice(&0x18u16.to_le_bytes()); // value offset
        let e = &mut a[0x18..0x38];
        e[0..4].copy_from_slice(&AT_DATA.to_le_bytes());
        e[4..6].copy_from_slice(&0x20u16.to_le_bytes());
        e[7] = 0x1A;
        e[0x10..0x18].copy_from_slice(&(20u64 | 1 << 48).to_le_bytes());
        let mut moved = img.clone();
        for (no, mut rec) in [(20usize, ext), (6, b)] {
            unfixup(&mut rec);
            moved[mft_off + no * rs..mft_off + (no + 1) * rs].copy_from_slice(&rec);
        }
        let again = read_record(&moved, &vol, &mft, MFT_RECORD_BITMAP).expect("record 6");
        assert!(attrs(&again, 0)
            .expect("attrs")
            .iter()
            .all(|a| a.ty != AT_DATA));
        assert_eq!(used_any(&moved, len, &info).expect("map"), want);
        let p = probe_any(&moved, len).expect("probe").expect("ntfs");
        assert_eq!(p.used, info.used);
        // The list pointing at a record without $DATA: an error, not a panic.
        let mut broken = moved.clone();
        broken[mft_off + 20 * rs..mft_off + 21 * rs]
            .copy_from_slice(&img[mft_off + 7 * rs..mft_off + 8 * rs]);
        assert!(used_any(&broken, len, &info).is_err());
    }

    #[test]
    fn corrupt_mft_is_an_error() {
        let img = fixture("ntfs.img");
        let len = img.len() as u64;
        let info = probe_any(&img, len).expect("probe").expect("ntfs");
        let vol = Boot::parse(&img[..512]).expect("parse").expect("ntfs");
        let mft = (vol.mft_lcn * vol.cluster_size) as usize;
        let rec6 = mft + 6 * vol.record_size as usize;
        // Break record 6's fixup (torn write).
        let mut bad = img.clone();
        bad[rec6 + 510] ^= 0xFF;
        assert!(matches!(
            used_any(&bad, len, &info),
            Err(FsError::Corrupt { .. })
        ));
        // Zero record 0: no $MFT runlist.
        let mut bad = img.clone();
        bad[mft..mft + 1024].fill(0);
        assert!(used_any(&bad, len, &info).is_err());
        // Still probes as NTFS (label/used unknown).
        let p = probe_any(&bad, len).expect("probe").expect("ntfs");
        assert_eq!(p.used, None);
        // Bad boot sector fields.
        for (off, v) in [(0x0B, 0x33u8), (0x0D, 0x00), (0x40, 0x00), (0x37, 0x7F)] {
            let mut bad = img.clone();
            bad[off] = v;
            assert!(probe_any(&bad, len).is_err(), "offset {off:#x}");
        }
        // Truncated.
        let short = img[..img.len() / 2].to_vec();
        assert!(used_any(&short, short.len() as u64, &info).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut img = fixture("ntfs.img");
        let len = img.len() as u64;
        let info = probe_any(&img, len).expect("probe").expect("ntfs");
        let vol = Boot::parse(&img[..512]).expect("parse").expect("ntfs");
        let mft = (vol.mft_lcn * vol.cluster_size) as usize;
        // Boot sector and the first 8 MFT records.
        crate::fs::testutil::fuzz(&mut img, &[(0, 0x50), (mft, 8 * 1024)], 500, |bad| {
            let _ = probe_any(&bad, len);
            let _ = used_any(&bad, len, &info);
        });
    }
}
