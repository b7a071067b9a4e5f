//! Transaction log (.LOG1 / .LOG2) recovery (regf: Format of transaction log
//! files, New format; Dirty state of a hive; Multiple transaction log files).
//!
//! Since Windows 8.1 the kernel writes dirty hive pages to a log as `HvLE`
//! entries and reconciles the primary file later, so an offline SYSTEM hive is
//! routinely older than its logs. Each entry carries a sequence number, the hive
//! bins data size, a list of dirty page references (offset, size relative to the
//! hive bins data) followed by the pages, and two Marvin32 hashes (of the entry
//! body and of its first 32 bytes). Recovery applies, from both logs, the valid
//! entries whose sequence number is at least the primary's secondary sequence
//! number, in ascending consecutive order, starting with the log whose base
//! block has the lower sequence number. A gap before the first entry is normal
//! after a "partial reconcile" (the data of the missing entries is already in
//! the primary file).
//!
//! Old-format logs (Windows XP to 8: base block followed by a `DIRT` dirty
//! vector) are detected and reported but not replayed.

use super::marvin::{marvin32, LOG_SEED};
use super::{header_checksum, rd_u32, rd_u64, wr_u32, HiveError, OpenReport, BASE_BLOCK};

/// One valid `HvLE` entry (page data kept as ranges into the log bytes).
#[derive(Debug, Clone)]
struct Entry {
    seq: u32,
    bins_size: u32,
    /// (offset in hive bins data, size, start in log bytes)
    pages: Vec<(u32, u32, usize)>,
}

/// Kind of a log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Windows 8.1+ `HvLE` entries.
    New,
    /// XP..8 dirty-vector log.
    Old,
    /// Zero-filled or unused.
    Empty,
}

/// Classify a log file's bytes.
pub fn log_format(bytes: &[u8]) -> LogFormat {
    if bytes.len() < 512 || bytes.iter().take(512).all(|b| *b == 0) {
        return LogFormat::Empty;
    }
    match (bytes.get(512..516), rd_u32(bytes, 28)) {
        (Some(b"HvLE"), _) | (_, Some(6)) => LogFormat::New,
        (Some(b"DIRT"), _) | (_, Some(1 | 2)) => LogFormat::Old,
        _ => LogFormat::Empty,
    }
}

fn parse_entries(
    name: &str,
    log: &[u8],
    size_limit: usize,
    warnings: &mut Vec<String>,
) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let mut pos = 512usize;
    while pos + 40 <= log.len() {
        if log.get(pos..pos + 4) != Some(b"HvLE") {
            break;
        }
        let size = rd_u32(log, pos + 4).unwrap_or(0) as usize;
        let seq = rd_u32(log, pos + 12).unwrap_or(0);
        let bins_size = rd_u32(log, pos + 16).unwrap_or(0);
        let count = rd_u32(log, pos + 20).unwrap_or(0) as usize;
        let stop = |why: &str, warnings: &mut Vec<String>| {
            warnings.push(format!(
                "{name}: log entry at offset {pos:#x} (sequence {seq}) ignored: {why}"
            ));
        };
        if size < 40 || size % 512 != 0 || pos + size > log.len() {
            stop("bad entry size", warnings);
            break;
        }
        let e = &log[pos..pos + size];
        if rd_u64(e, 32) != Some(marvin32(LOG_SEED, &e[..32]))
            || rd_u64(e, 24) != Some(marvin32(LOG_SEED, &e[40..]))
        {
            // Normal end of the valid part: Windows leaves stale data after it.
            break;
        }
        // Every page of a grown hive is in some log, so the size cannot exceed
        // primary + logs; this bounds the allocation for hostile input.
        if bins_size as usize > size_limit {
            stop(
                "hive bins size larger than the primary and its logs together",
                warnings,
            );
            break;
        }
        if bins_size % 4096 != 0 || count.checked_mul(8).map_or(true, |n| 40 + n > size) {
            stop("bad header fields", warnings);
            break;
        }
        let mut data = 40 + count * 8;
        let mut pages = Vec::with_capacity(count);
        let mut ok = true;
        for i in 0..count {
            let off = rd_u32(e, 40 + i * 8).unwrap_or(0);
            let psz = rd_u32(e, 44 + i * 8).unwrap_or(0);
            if u64::from(off) + u64::from(psz) > u64::from(bins_size) || data + psz as usize > size
            {
                ok = false;
                break;
            }
            pages.push((off, psz, pos + data));
            data += psz as usize;
        }
        if !ok {
            stop("dirty page outside the hive", warnings);
            break;
        }
        if let Some(last) = out.last() {
            if seq != last.seq.wrapping_add(1) {
                break;
            }
        }
        out.push(Entry {
            seq,
            bins_size,
            pages,
        });
        pos += size;
    }
    out
}

/// Replay `logs` into `primary` (the whole hive file in memory), updating `report`.
pub fn recover(
    primary: &mut Vec<u8>,
    logs: &[(String, Vec<u8>)],
    report: &mut OpenReport,
) -> Result<(), HiveError> {
    let size_limit = primary.len() + logs.iter().map(|(_, b)| b.len()).sum::<usize>();
    let stored = rd_u32(primary, 508).unwrap_or(0);
    let computed = header_checksum(primary);
    let primary_ok = stored == computed;
    let mut candidates = Vec::new();
    for (name, bytes) in logs {
        match log_format(bytes) {
            LogFormat::Empty => {}
            LogFormat::Old => report.warnings.push(format!(
                "{name} is an old-format (Windows 8 and earlier) transaction log; it was not replayed"
            )),
            LogFormat::New => {
                if header_checksum(bytes) != rd_u32(bytes, 508).unwrap_or(0) || bytes.get(0..4) != Some(b"regf") {
                    report.warnings.push(format!("{name}: base block invalid, log ignored"));
                    continue;
                }
                let entries = parse_entries(name, bytes, size_limit, &mut report.warnings);
                candidates.push((rd_u32(bytes, 4).unwrap_or(0), name.as_str(), bytes, entries));
            }
        }
    }
    if !primary_ok {
        // Take the base block from the newest valid log (regf: New format, Base block).
        let Some((_, _, bytes, _)) = candidates.iter().max_by_key(|c| c.0) else {
            return Err(HiveError::BadChecksum { stored, computed });
        };
        primary[..512].copy_from_slice(&bytes[..512]);
        report
            .warnings
            .push("primary base block was invalid; taken from the transaction log".into());
    }
    candidates.sort_by_key(|c| c.0);
    let floor = rd_u32(primary, 8).unwrap_or(0);
    let mut last: Option<u32> = None;
    let mut first: Option<u32> = None;
    let mut applied = 0usize;
    for (_, name, bytes, entries) in &candidates {
        for e in entries {
            if e.seq < floor {
                continue;
            }
            if let Some(l) = last {
                if e.seq <= l {
                    continue;
                }
                if e.seq != l.wrapping_add(1) {
                    report.warnings.push(format!(
                        "{name}: sequence gap after {l} (next entry {}); later entries not applied",
                        e.seq
                    ));
                    break;
                }
            }
            let new_len = BASE_BLOCK + e.bins_size as usize;
            primary.resize(new_len, 0);
            for (off, size, at) in &e.pages {
                let dst = BASE_BLOCK + *off as usize;
                let src = bytes
                    .get(*at..*at + *size as usize)
                    .ok_or_else(|| HiveError::Log {
                        file: (*name).to_owned(),
                        reason: format!("page at {at:#x} beyond the end of the log"),
                    })?;
                primary[dst..dst + *size as usize].copy_from_slice(src);
            }
            wr_u32(primary, 40, e.bins_size);
            first.get_or_insert(e.seq);
            last = Some(e.seq);
            applied += 1;
        }
    }
    if let (Some(f), Some(l)) = (first, last) {
        if f > floor {
            report.warnings.push(format!(
                "log entries start at sequence {f}, primary expects {floor}: assuming a partial reconcile (normal on Windows 8.1+)"
            ));
        }
        report.dirty = true;
        report.log_entries_applied = applied;
        report.log_seq_range = Some((f, l));
        wr_u32(primary, 4, l);
        wr_u32(primary, 8, l);
        wr_u32(primary, 28, 0);
        let ck = header_checksum(primary);
        wr_u32(primary, 508, ck);
    } else if report.dirty {
        report.warnings.push(format!(
            "hive is dirty (sequence numbers {}/{}) but the transaction logs hold no applicable entries: \
             recent changes may be lost; editing continues on the primary file",
            report.seq1, report.seq2
        ));
    }
    Ok(())
}
