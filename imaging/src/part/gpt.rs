//! GPT codec, following the UEFI Specification 2.10, chapter 5 "GUID
//! Partition Table (GPT) Disk Layout":
//! - §5.2.3 protective MBR (written by `serialize`),
//! - §5.3.2 GPT header (table 5.5) and its validity rules,
//! - §5.3.3 GPT partition entry array (table 5.6).
//!
//! All structures are little-endian. LBAs are in units of the logical block
//! size the disk is read with.

use super::mbr::{self, Mbr};
use super::{
    guid_from_str, guid_to_string, layout_warnings, le_u32, le_u64, new_guid, read_bytes,
    PartError, PartType, Partition, PartitionTable, SectorWrite, TableKind,
};
use crate::read_at::ReadAt;

/// Table 5.5 "Signature": ASCII "EFI PART".
pub(super) const SIGNATURE: &[u8] = b"EFI PART";
/// Table 5.5 "Revision" 1.0 (the only one defined).
const REVISION: u32 = 0x0001_0000;
/// Table 5.5 "HeaderSize": 92 bytes; must be >= 92 and <= the block size.
const HEADER_SIZE: u32 = 92;
/// §5.3.3: entries are 128 bytes; SizeOfPartitionEntry "must be set to a
/// value of 128 x 2^n" — larger entries are accepted, their tail is ignored.
const ENTRY_SIZE: u32 = 128;
/// §5.3.2: "a minimum of 16,384 bytes of space must be reserved for the GPT
/// Partition Entry Array".
const MIN_ARRAY_BYTES: u64 = 16384;
/// Our own cap on NumberOfPartitionEntries x SizeOfPartitionEntry, so a
/// corrupt header cannot make us allocate much (128 x 128 = 16 KiB is usual;
/// this allows 16384 128-byte entries).
pub(super) const MAX_ARRAY_BYTES: u64 = 2 << 20;
/// PartitionName: 36 UTF-16LE code units (72 bytes).
const NAME_UNITS: usize = 36;

#[derive(Debug, Clone)]
struct Header {
    my_lba: u64,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: [u8; 16],
    entries_lba: u64,
    num_entries: u32,
    entry_size: u32,
    entries_crc: u32,
}

/// Sectors of an entry array of `entries` 128-byte entries, with at least
/// the 16 KiB the spec reserves.
pub(super) fn array_sectors(entries: u32, sector_size: u32) -> u64 {
    let ss = u64::from(sector_size.max(1));
    let bytes = (u64::from(entries) * u64::from(ENTRY_SIZE)).max(MIN_ARRAY_BYTES);
    bytes.div_ceil(ss)
}

/// Parse and check one header (§5.3.2: signature, HeaderSize, header CRC32
/// with the CRC field zeroed, MyLBA), then read its entry array and check
/// the array's CRC32.
fn read_one(
    dev: &dyn ReadAt,
    lba: u64,
    which: &'static str,
    ss: u32,
    disk_sectors: u64,
) -> Result<(Header, Vec<u8>), PartError> {
    let ssz = u64::from(ss);
    let inv = |problem: String| PartError::GptHeaderInvalid {
        which,
        lba,
        problem,
    };
    if lba >= disk_sectors {
        return Err(inv(format!(
            "beyond the end of the disk ({disk_sectors} sectors)"
        )));
    }
    let sec = read_bytes(dev, lba * ssz, ssz)?;
    if &sec[0..8] != SIGNATURE {
        return Err(PartError::GptSignature { which, lba });
    }
    let header_size = le_u32(&sec, 12);
    if header_size < HEADER_SIZE || header_size > ss {
        return Err(inv(format!(
            "header size {header_size} outside [{HEADER_SIZE}, {ss}]"
        )));
    }
    let stored = le_u32(&sec, 16);
    let mut h = sec[..header_size as usize].to_vec();
    h[16..20].fill(0);
    let computed = crc32fast::hash(&h);
    if stored != computed {
        return Err(PartError::GptHeaderCrc {
            which,
            lba,
            stored,
            computed,
        });
    }
    let revision = le_u32(&sec, 8);
    if revision >> 16 != 1 {
        return Err(inv(format!("unsupported revision {revision:#010x}")));
    }
    let mut disk_guid = [0u8; 16];
    disk_guid.copy_from_slice(&sec[56..72]);
    let hd = Header {
        my_lba: le_u64(&sec, 24),
        alternate_lba: le_u64(&sec, 32),
        first_usable: le_u64(&sec, 40),
        last_usable: le_u64(&sec, 48),
        disk_guid,
        entries_lba: le_u64(&sec, 72),
        num_entries: le_u32(&sec, 80),
        entry_size: le_u32(&sec, 84),
        entries_crc: le_u32(&sec, 88),
    };
    if hd.my_lba != lba {
        return Err(inv(format!("MyLBA is {} instead of {lba}", hd.my_lba)));
    }
    // 128 x 2^n is exactly "a power of two, at least 128".
    if hd.entry_size < ENTRY_SIZE || !hd.entry_size.is_power_of_two() {
        return Err(inv(format!(
            "partition entry size {} is not 128 x 2^n",
            hd.entry_size
        )));
    }
    let array_bytes = u64::from(hd.num_entries) * u64::from(hd.entry_size);
    if hd.num_entries == 0 || array_bytes > MAX_ARRAY_BYTES {
        return Err(inv(format!(
            "{} partition entries of {} bytes (limit {MAX_ARRAY_BYTES} bytes in all)",
            hd.num_entries, hd.entry_size
        )));
    }
    if hd.first_usable > hd.last_usable.saturating_add(1) || hd.first_usable < 2 {
        return Err(inv(format!(
            "usable LBAs {}..={} make no sense",
            hd.first_usable, hd.last_usable
        )));
    }
    // Byte offsets of both usable bounds must be representable.
    if hd
        .last_usable
        .checked_add(1)
        .and_then(|l| l.checked_mul(ssz))
        .is_none()
    {
        return Err(inv(format!("last usable LBA {} overflows", hd.last_usable)));
    }
    let arr_secs = array_bytes.div_ceil(ssz);
    let arr_end = hd.entries_lba.saturating_add(arr_secs);
    // The entry array must lie outside the usable area and not over either
    // header: after the primary header and before FirstUsableLBA, or after
    // LastUsableLBA and before the backup header.
    let before = hd.entries_lba >= 2 && arr_end <= hd.first_usable;
    let after = hd.entries_lba > hd.last_usable
        && arr_end <= disk_sectors
        && (arr_end <= lba || hd.entries_lba > lba);
    if !(before || after) {
        return Err(inv(format!(
            "partition entry array at LBA {} ({arr_secs} sectors) overlaps the usable area or a header",
            hd.entries_lba
        )));
    }
    let offset = hd
        .entries_lba
        .checked_mul(ssz)
        .ok_or_else(|| inv("entry array LBA overflows".into()))?;
    let arr = read_bytes(dev, offset, array_bytes)?;
    let computed = crc32fast::hash(&arr);
    if computed != hd.entries_crc {
        return Err(PartError::GptEntriesCrc {
            which,
            lba: hd.entries_lba,
            stored: hd.entries_crc,
            computed,
        });
    }
    Ok((hd, arr))
}

/// Read a GPT whose protective MBR is `m` (used only for the hybrid warning).
pub(super) fn read(
    dev: &dyn ReadAt,
    disk_len: u64,
    ss: u32,
    m: &Mbr,
) -> Result<PartitionTable, PartError> {
    let ssz = u64::from(ss);
    let n = disk_len / ssz;
    let last = n.saturating_sub(1);
    let mut warnings = Vec::new();
    if m.is_hybrid() {
        warnings.push(
            "hybrid MBR: the GPT is used; a restore writes a pure protective MBR".to_string(),
        );
    }
    let (h, arr) = match read_one(dev, 1, "primary", ss, n) {
        Ok((h, arr)) => {
            // §5.3.2: the backup header is at AlternateLBA, normally the last
            // LBA. Check it so a restore/warning can say it is stale.
            if h.alternate_lba != last {
                warnings.push(format!(
                    "primary GPT header says the backup is at LBA {} but the disk ends at LBA {last} (disk resized or image truncated?)",
                    h.alternate_lba
                ));
            }
            match read_one(dev, h.alternate_lba, "backup", ss, n) {
                Ok((b, barr)) => {
                    if b.entries_crc != h.entries_crc
                        || b.disk_guid != h.disk_guid
                        || barr.len() != arr.len()
                    {
                        warnings.push(
                            "backup GPT differs from the primary; the primary is used".to_string(),
                        );
                    }
                }
                Err(e) => warnings.push(format!(
                    "backup GPT damaged ({}); the primary is used",
                    e.chain()
                )),
            }
            (h, arr)
        }
        Err(pe) => {
            if matches!(pe, PartError::GptSignature { .. }) {
                if let Some(other) = other_sector_size(dev, ss, disk_len) {
                    return Err(PartError::SectorSizeMismatch {
                        given: ss,
                        found: other,
                    });
                }
            }
            match read_one(dev, last, "backup", ss, n) {
                Ok((b, barr)) => {
                    warnings.push(format!(
                        "primary GPT header damaged ({}), used the backup at LBA {last}",
                        pe.chain()
                    ));
                    (b, barr)
                }
                Err(be) => {
                    return Err(PartError::GptUnreadable {
                        primary: Box::new(pe),
                        backup: Box::new(be),
                    })
                }
            }
        }
    };
    let mut partitions = Vec::new();
    for i in 0..h.num_entries {
        let at = i as usize * h.entry_size as usize;
        let e = &arr[at..at + ENTRY_SIZE as usize];
        if e[0..16].iter().all(|&b| b == 0) {
            continue; // §5.3.3: a zero type GUID marks an unused entry
        }
        let bad = |problem: String| PartError::GptEntryInvalid { index: i, problem };
        let start_lba = le_u64(e, 32);
        let end_lba = le_u64(e, 40);
        if end_lba < start_lba {
            return Err(bad(format!(
                "ending LBA {end_lba} before starting LBA {start_lba}"
            )));
        }
        let start = start_lba
            .checked_mul(ssz)
            .ok_or_else(|| bad("starting LBA overflows".into()))?;
        let len = (end_lba - start_lba + 1)
            .checked_mul(ssz)
            .filter(|l| start.checked_add(*l).is_some())
            .ok_or_else(|| bad("ending LBA overflows".into()))?;
        let mut tg = [0u8; 16];
        tg.copy_from_slice(&e[0..16]);
        let mut ug = [0u8; 16];
        ug.copy_from_slice(&e[16..32]);
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let name = char::decode_utf16(units)
            .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
        partitions.push(Partition {
            number: i + 1,
            start,
            len,
            ptype: PartType::Gpt(guid_to_string(&tg)),
            guid: Some(guid_to_string(&ug)),
            name,
            attributes: le_u64(e, 48),
            bootable: false,
            logical: false,
        });
    }
    partitions.sort_by_key(|p| (p.start, p.number));
    let mut t = PartitionTable {
        kind: TableKind::Gpt,
        sector_size: ss,
        disk_id: guid_to_string(&h.disk_guid),
        first_usable: h.first_usable * ssz,
        last_usable: (h.last_usable + 1) * ssz,
        partitions,
        max_entries: h.num_entries,
        warnings,
    };
    layout_warnings(&mut t, disk_len);
    Ok(t)
}

/// When the caller's sector size finds no GPT, look for "EFI PART" at LBA 1
/// of the other common size so the error can name it.
fn other_sector_size(dev: &dyn ReadAt, ss: u32, disk_len: u64) -> Option<u32> {
    [512u32, 4096].into_iter().filter(|&o| o != ss).find(|&o| {
        u64::from(o) + 8 <= disk_len
            && read_bytes(dev, u64::from(o), 8)
                .map(|s| s == SIGNATURE)
                .unwrap_or(false)
    })
}

/// Build the protective MBR, the primary header + array and the backup array
/// + header for a disk of `disk_len` bytes.
pub(super) fn serialize(
    t: &PartitionTable,
    disk_len: u64,
    sector0: Option<&[u8]>,
) -> Result<Vec<SectorWrite>, PartError> {
    let ss = t.sector_size;
    let ssz = u64::from(ss);
    let n = disk_len / ssz;
    if t.max_entries == 0 || u64::from(t.max_entries) * u64::from(ENTRY_SIZE) > MAX_ARRAY_BYTES {
        return Err(PartError::InvalidTable(format!(
            "{} GPT entries (1 to {} allowed)",
            t.max_entries,
            MAX_ARRAY_BYTES / u64::from(ENTRY_SIZE)
        )));
    }
    let arr = array_sectors(t.max_entries, ss);
    let first_lba = t.first_usable / ssz;
    if first_lba < 2 + arr {
        return Err(PartError::InvalidTable(format!(
            "first usable byte {} is inside the primary GPT entry array (ends at byte {})",
            t.first_usable,
            (2 + arr) * ssz
        )));
    }
    // Backup array + header occupy the last 1 + arr sectors (§5.3.2).
    let needed = (first_lba + 1 + arr + 1).saturating_mul(ssz);
    if n * ssz < needed {
        return Err(PartError::DiskTooSmall { disk_len, needed });
    }
    let last_lba = n - 1;
    let backup_arr_lba = last_lba - arr;
    let last_usable_lba = backup_arr_lba - 1;
    for p in &t.partitions {
        if p.logical {
            return Err(PartError::InvalidPartition {
                number: p.number,
                problem: "GPT has no logical partitions".into(),
            });
        }
        if p.number == 0 || p.number > t.max_entries {
            return Err(PartError::InvalidPartition {
                number: p.number,
                problem: format!("number outside 1..={} (the GPT entry count)", t.max_entries),
            });
        }
        if p.start < t.first_usable || p.end() > (last_usable_lba + 1) * ssz {
            return Err(PartError::OutsideUsable {
                number: p.number,
                start: p.start,
                end: p.end(),
                first_usable: t.first_usable,
                last_usable: (last_usable_lba + 1) * ssz,
            });
        }
    }

    // §5.3.3 partition entry array, entry i at (number - 1) * 128.
    let mut array = vec![0u8; (arr * ssz) as usize];
    for p in &t.partitions {
        let bad = |problem: &str| PartError::InvalidPartition {
            number: p.number,
            problem: problem.to_string(),
        };
        let e = &mut array[(p.number as usize - 1) * ENTRY_SIZE as usize..][..ENTRY_SIZE as usize];
        let PartType::Gpt(tg) = &p.ptype else {
            return Err(bad("MBR type in a GPT"));
        };
        e[0..16].copy_from_slice(&guid_from_str(tg).ok_or_else(|| bad("bad type GUID"))?);
        let ug = match &p.guid {
            Some(g) => guid_from_str(g).ok_or_else(|| bad("bad unique partition GUID"))?,
            None => guid_from_str(&new_guid()).ok_or_else(|| bad("GUID generation failed"))?,
        };
        e[16..32].copy_from_slice(&ug);
        e[32..40].copy_from_slice(&(p.start / ssz).to_le_bytes());
        e[40..48].copy_from_slice(&(p.end() / ssz - 1).to_le_bytes());
        e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        let units: Vec<u16> = p.name.encode_utf16().collect();
        if units.len() > NAME_UNITS {
            return Err(bad("name longer than 36 UTF-16 code units"));
        }
        for (i, u) in units.iter().enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
    }
    let entries_bytes = t.max_entries as usize * ENTRY_SIZE as usize;
    let entries_crc = crc32fast::hash(&array[..entries_bytes]);
    let disk_guid = if t.disk_id.is_empty() {
        new_guid()
    } else {
        t.disk_id.clone()
    };
    let disk_guid = guid_from_str(&disk_guid).ok_or_else(|| {
        PartError::InvalidTable(format!("disk GUID {:?} is not 8-4-4-4-12", t.disk_id))
    })?;

    let header = |my: u64, alt: u64, entries_lba: u64| -> Vec<u8> {
        let mut h = vec![0u8; ssz as usize];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&REVISION.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        // 16..20 HeaderCRC32, computed last; 20..24 Reserved, zero.
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&first_lba.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable_lba.to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&t.max_entries.to_le_bytes());
        h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };

    let mut head = mbr::protective(n, ssz, sector0);
    head.extend_from_slice(&header(1, last_lba, 2));
    head.extend_from_slice(&array);
    let mut tail = array;
    tail.extend_from_slice(&header(last_lba, 1, backup_arr_lba));
    Ok(vec![
        SectorWrite {
            offset: 0,
            data: head,
        },
        SectorWrite {
            offset: backup_arr_lba * ssz,
            data: tail,
        },
    ])
}
