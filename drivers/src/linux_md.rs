//! Linux roots on md RAID1, fixed without the kernel's md driver (which the
//! machine doing the restore may lack, and which would claim the members).
//!
//! Every member of a RAID1 holds the whole array's data at `data_offset`
//! (metadata 1.0, 1.1 and 1.2 alike), so a filesystem in the array is
//! mounted through one current member's data range, as an LVM volume is
//! ([`crate::linux_offline`]). What that changes must then reach the other
//! members, or md would read stale blocks from them: [`sync`] runs after
//! everything is unmounted and
//!
//! 1. copies each chunk that differs from the written member to the other
//!    current members on the disk (the result equals a resync);
//! 2. raises the event count of every member on the disk by one, so md
//!    treats copies of the array elsewhere (the other disk of a two-disk
//!    mirror, the disk the image came from) as out of date instead of
//!    mixing them in: it recovers them in full when they are added back;
//! 3. leaves the write-intent bitmap's event count behind unless every
//!    member is on this disk, which makes the kernel recover all blocks of a
//!    returning member rather than only those the bitmap marks (our writes
//!    marked none).
//!
//! Other levels (RAID0/4/5/6/10, linear) need the array assembled and are
//! named as not searched, as are metadata 0.90 members and members whose
//! superblock is damaged. Members that are out of date, spares or marked
//! faulty are left alone.

use std::fs::File;
use std::path::Path;

use imaging::md::{self, Member, Role};
use imaging::read_at::{FileExt, ReadAt, Window};
use serde::{Deserialize, Serialize};

/// One current member of an array on the target disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdMember {
    pub partition: u32,
    /// The partition's start on the disk, in bytes.
    pub start: u64,
    /// Its slot in the array.
    pub slot: u16,
    /// Superblock position in the partition and length, in bytes.
    pub sb_at: u64,
    pub sb_len: u64,
    pub data_offset: u64,
    pub events: u64,
    /// The bitmap's position relative to the superblock, in bytes.
    pub bitmap_at: Option<i64>,
}

/// An md RAID1 array with current members on the target disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdArray {
    /// mdadm's name for it ("debian:0"), or its UUID when it has none.
    pub name: String,
    pub uuid: String,
    pub version: String,
    pub raid_disks: u32,
    /// The array's data length, in bytes.
    pub data_size: u64,
    /// Current members on the disk, by partition; the first is the one
    /// mounted and written.
    pub members: Vec<MdMember>,
}

impl MdArray {
    /// Active slots with no current member on this disk.
    pub fn absent(&self) -> u32 {
        self.raid_disks.saturating_sub(self.members.len() as u32)
    }

    /// "md RAID1 debian:0 (partitions 3, 4)".
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self.members.iter().map(|m| m.partition.to_string()).collect();
        let word = if parts.len() == 1 { "partition" } else { "partitions" };
        format!("md RAID1 {} ({word} {})", self.name, parts.join(", "))
    }

    /// What [`sync`] will do, for the plan.
    pub fn plan_note(&self) -> String {
        let mut s = format!("{}: written through partition {}", self.describe(), self.members[0].partition);
        if self.members.len() > 1 {
            s.push_str(&format!(", then what changed is copied to partition {}", others(self)));
        }
        s.push_str("; its event count is raised so md treats copies elsewhere as out of date");
        if self.absent() > 0 {
            s.push_str(&format!(
                " ({} of its {} members {} not on this disk: the array starts degraded until {} added back and recovered)",
                self.absent(),
                self.raid_disks,
                if self.absent() == 1 { "is" } else { "are" },
                if self.absent() == 1 { "it is" } else { "they are" }
            ));
        }
        s
    }
}

fn others(a: &MdArray) -> String {
    a.members[1..].iter().map(|m| m.partition.to_string()).collect::<Vec<_>>().join(", ")
}

/// A partition the inventory calls an md member: number, start, length.
pub type Candidate = (u32, u64, u64);

/// The RAID1 arrays whose current members are among `members` (partitions
/// of the disk open as `disk`), and the members not used, with the reason.
pub fn arrays(disk: &dyn ReadAt, members: &[Candidate]) -> (Vec<MdArray>, Vec<String>) {
    let mut skipped = Vec::new();
    let mut read: Vec<(Candidate, Member)> = Vec::new();
    for &(n, start, len) in members {
        match md::read_member(&Window::new(disk, start, len), len) {
            Ok(Some(m)) => read.push(((n, start, len), m)),
            Ok(None) => skipped.push(format!("partition {n}: an md RAID member whose superblock was not found")),
            Err(e) => skipped.push(format!("partition {n}: {e}")),
        }
    }
    let mut out = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (_, first) in &read {
        if seen.contains(&first.uuid.as_str()) {
            continue;
        }
        seen.push(&first.uuid);
        let same: Vec<&(Candidate, Member)> = read.iter().filter(|(_, m)| m.uuid == first.uuid).collect();
        let name = if first.name.is_empty() { first.uuid.clone() } else { first.name.clone() };
        let all = |why: &str, skipped: &mut Vec<String>| {
            for ((n, ..), _) in &same {
                skipped.push(format!("partition {n}: a member of md {} array {name}, {why}: a system inside it is not fixed", first.level_name()));
            }
        };
        if first.version == "0.90" {
            all("metadata 0.90, which this does not read further", &mut skipped);
            continue;
        }
        if first.level != 1 {
            all("which needs the array assembled by the kernel's md driver (only RAID1 is read without it)", &mut skipped);
            continue;
        }
        let current = same.iter().filter(|(_, m)| matches!(m.role, Role::Active(_))).map(|(_, m)| m.events).max();
        let mut ms = Vec::new();
        let mut data_size = u64::MAX;
        for ((n, start, _), m) in &same {
            match m.role {
                Role::Active(slot) if Some(m.events) == current => {
                    data_size = data_size.min(m.data_size);
                    ms.push(MdMember { partition: *n, start: *start, slot, sb_at: m.sb_at, sb_len: m.sb_len, data_offset: m.data_offset, events: m.events, bitmap_at: m.bitmap_at });
                }
                Role::Active(_) => skipped.push(format!("partition {n}: an out-of-date member of md RAID1 array {name} (event count {}, the others {}); left alone", m.events, current.unwrap_or(0))),
                Role::Spare => skipped.push(format!("partition {n}: a spare of md RAID1 array {name}; left alone")),
                Role::Faulty => skipped.push(format!("partition {n}: a member of md RAID1 array {name} marked faulty; left alone")),
                Role::Other(_) => skipped.push(format!("partition {n}: a member of md RAID1 array {name} being added or replaced; left alone")),
            }
        }
        // Two members claiming one slot: not an array md would assemble.
        let mut slots: Vec<u16> = ms.iter().map(|m| m.slot).collect();
        slots.sort_unstable();
        slots.dedup();
        if slots.len() != ms.len() {
            all("whose members on this disk claim the same slot (copies of one member?)", &mut skipped);
            continue;
        }
        if ms.is_empty() {
            continue;
        }
        out.push(MdArray { name, uuid: first.uuid.clone(), version: first.version.clone(), raid_disks: first.raid_disks, data_size, members: ms });
    }
    (out, skipped)
}

/// Errors of [`sync`].
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{what} of {array}: {source}")]
    Io { array: String, what: String, source: std::io::Error },
    #[error("{array}: the superblock on partition {partition} changed or is damaged ({detail}); nothing more was written to the array")]
    Superblock { array: String, partition: u32, detail: String },
}

const CHUNK: usize = 1 << 20;

/// Bring the other members of `a` up to date with its first member and
/// raise every member's event count (see the module's text). `disk` is
/// open for reading and writing; nothing of it may be mounted. Returns what
/// was done, in words.
pub fn sync(disk: &File, a: &MdArray, unix_secs: u64) -> Result<String, SyncError> {
    let ioe = |what: String| {
        let array = a.describe();
        move |source: std::io::Error| SyncError::Io { array: array.clone(), what: what.clone(), source }
    };
    // Check every superblock before writing anything: a member that changed
    // since the plan (assembled, re-added elsewhere) stops the run.
    let mut sbs = Vec::new();
    for m in &a.members {
        let mut sb = vec![0u8; m.sb_len as usize];
        FileExt::read_exact_at(disk, &mut sb, m.start + m.sb_at).map_err(ioe(format!("reading the superblock on partition {}", m.partition)))?;
        let bad = |detail: String| SyncError::Superblock { array: a.describe(), partition: m.partition, detail };
        let events = sb.get(200..208).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
        if events != Some(m.events) {
            return Err(bad(format!("event count {} where the plan read {}", events.unwrap_or(0), m.events)));
        }
        sbs.push(sb);
    }
    let first = &a.members[0];
    let mut copied = 0u64;
    let mut src = vec![0u8; CHUNK];
    let mut dst = vec![0u8; CHUNK];
    for m in &a.members[1..] {
        let mut off = 0u64;
        while off < a.data_size {
            let n = (a.data_size - off).min(CHUNK as u64) as usize;
            let what = || format!("copying to partition {} at byte {off} of the array", m.partition);
            FileExt::read_exact_at(disk, &mut src[..n], first.start + first.data_offset + off).map_err(ioe(what()))?;
            FileExt::read_exact_at(disk, &mut dst[..n], m.start + m.data_offset + off).map_err(ioe(what()))?;
            if src[..n] != dst[..n] {
                disk.write_all_at(&src[..n], m.start + m.data_offset + off).map_err(ioe(what()))?;
                copied += n as u64;
            }
            off += n as u64;
        }
    }
    disk.sync_data().map_err(ioe("flushing the copied data".into()))?;
    // Then the superblocks: md must never see the new event count on a
    // member whose data is not yet the array's.
    let events = a.members.iter().map(|m| m.events).max().unwrap_or(0) + 1;
    let mut bitmaps = 0;
    for (m, sb) in a.members.iter().zip(&sbs) {
        let new = md::with_events(sb, events, unix_secs).map_err(|e| SyncError::Superblock { array: a.describe(), partition: m.partition, detail: e.to_string() })?;
        let what = || format!("writing the superblock on partition {}", m.partition);
        disk.write_all_at(&new, m.start + m.sb_at).map_err(ioe(what()))?;
        if let (Some(b), 0) = (m.bitmap_at, a.absent()) {
            let at = (m.start + m.sb_at).checked_add_signed(b).ok_or_else(|| SyncError::Superblock {
                array: a.describe(),
                partition: m.partition,
                detail: format!("its bitmap offset {b} points before the disk"),
            })?;
            let what = || format!("updating the bitmap on partition {}", m.partition);
            let mut bm = vec![0u8; 256];
            FileExt::read_exact_at(disk, &mut bm, at).map_err(ioe(what()))?;
            if let Some(nb) = md::bitmap_with_events(&bm, events) {
                disk.write_all_at(&nb, at).map_err(ioe(what()))?;
                bitmaps += 1;
            }
        }
    }
    disk.sync_data().map_err(ioe("flushing the superblocks".into()))?;
    let mut s = a.describe();
    s.push(':');
    if a.members.len() > 1 {
        s.push_str(&format!(" {} copied from partition {} to partition {};", imaging::blockdev::human_size(copied), first.partition, others(a)));
    }
    s.push_str(&format!(" event count raised to {events}"));
    if a.absent() > 0 {
        s.push_str(&format!(" ({} member{} elsewhere now out of date: recovered in full when added back)", a.absent(), if a.absent() == 1 { "" } else { "s" }));
    } else if bitmaps > 0 {
        s.push_str(" with the write-intent bitmap");
    }
    Ok(s)
}

/// [`sync`] on the disk at `path`.
pub fn sync_path(path: &Path, a: &MdArray) -> Result<String, SyncError> {
    let f = File::options().read(true).write(true).open(path).map_err(|source| SyncError::Io { array: a.describe(), what: format!("opening {}", path.display()), source })?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    sync(&f, a, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// A 1.2 superblock (4 KiB in) for slot `slot` of a `raid_disks`-disk
    /// array at `level`, data 1 MiB in, 6 MiB long; `bitmap`: an internal
    /// bitmap 8 sectors after the superblock.
    fn superblock(level: u32, raid_disks: u32, slot: u16, events: u64, bitmap: bool) -> Vec<u8> {
        let mut sb = vec![0u8; 256 + 2 * raid_disks as usize];
        let mut put = |at: usize, b: &[u8]| sb[at..at + b.len()].copy_from_slice(b);
        put(0, &0xa92b_4efcu32.to_le_bytes());
        put(4, &1u32.to_le_bytes());
        put(8, &u32::from(bitmap).to_le_bytes());
        put(16, &[7; 16]);
        put(32, b"host:0");
        put(72, &level.to_le_bytes());
        put(92, &raid_disks.to_le_bytes());
        put(96, &8i32.to_le_bytes());
        put(128, &2048u64.to_le_bytes());
        put(136, &(6 * MIB / 512).to_le_bytes());
        put(144, &8u64.to_le_bytes());
        put(160, &u32::from(slot).to_le_bytes());
        put(200, &events.to_le_bytes());
        put(208, &u64::MAX.to_le_bytes());
        put(220, &raid_disks.to_le_bytes());
        for s in 0..raid_disks as usize {
            put(256 + 2 * s, &(s as u16).to_le_bytes());
        }
        let c = md::checksum_1(&sb);
        sb[216..220].copy_from_slice(&c.to_le_bytes());
        sb
    }

    /// A disk image with members at 1 MiB and 9 MiB (8 MiB each), every
    /// data byte `fill`, and a bitmap superblock after each superblock.
    fn disk(sbs: &[Vec<u8>]) -> (tempfile::NamedTempFile, Vec<Candidate>) {
        let f = tempfile::NamedTempFile::new().expect("test file");
        f.as_file().set_len(24 * MIB).expect("test file");
        let mut c = Vec::new();
        for (i, sb) in sbs.iter().enumerate() {
            let start = MIB + i as u64 * 8 * MIB;
            f.as_file().write_all_at(sb, start + 4096).expect("test file");
            let mut bm = vec![0u8; 256];
            bm[0..4].copy_from_slice(&md::BITMAP_MAGIC.to_le_bytes());
            bm[24..32].copy_from_slice(&5u64.to_le_bytes());
            f.as_file().write_all_at(&bm, start + 4096 + 4096).expect("test file");
            f.as_file().write_all_at(&vec![0x5a; 6 * MIB as usize], start + MIB).expect("test file");
            c.push((i as u32 + 3, start, 8 * MIB));
        }
        (f, c)
    }

    fn read(f: &File, at: u64, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        FileExt::read_exact_at(f, &mut b, at).expect("test file");
        b
    }

    fn member(f: &File, start: u64) -> Member {
        md::read_member(&Window::new(f, start, 8 * MIB), 8 * MIB).expect("reads").expect("a member")
    }

    #[test]
    fn a_two_member_array_is_synced_and_its_events_raised() {
        let (f, c) = disk(&[superblock(1, 2, 0, 5, true), superblock(1, 2, 1, 5, true)]);
        let (found, skipped) = arrays(f.as_file(), &c);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(found.len(), 1);
        let a = &found[0];
        assert_eq!((a.name.as_str(), a.data_size, a.absent()), ("host:0", 6 * MIB, 0));
        assert_eq!(a.describe(), "md RAID1 host:0 (partitions 3, 4)");
        assert!(a.plan_note().contains("then what changed is copied to partition 4"), "{}", a.plan_note());
        // Writes through the first member: two chunks, one of them the last.
        f.as_file().write_all_at(b"changed", 2 * MIB + 12345).expect("test file");
        f.as_file().write_all_at(b"end", 2 * MIB + 6 * MIB - 3).expect("test file");
        let w = File::options().read(true).write(true).open(f.path()).expect("test file");
        let said = sync(&w, a, 1_800_000_000).expect("test file");
        assert!(said.contains("2.0 MiB copied from partition 3 to partition 4; event count raised to 6 with the write-intent bitmap"), "{said}");
        assert_eq!(read(f.as_file(), 2 * MIB, 6 * MIB as usize), read(f.as_file(), 10 * MIB, 6 * MIB as usize));
        for start in [MIB, 9 * MIB] {
            assert_eq!(member(f.as_file(), start).events, 6);
            assert_eq!(u64::from_le_bytes(read(f.as_file(), start + 8192 + 24, 8).try_into().expect("8 bytes")), 6, "bitmap events");
        }
        // The plan's view is now stale: a second run with it stops before
        // writing.
        let before = read(f.as_file(), 0, 24 * MIB as usize);
        let e = sync(&w, a, 1_800_000_001).expect_err("fails");
        assert!(e.to_string().contains("event count 6 where the plan read 5"), "{e}");
        assert_eq!(before, read(f.as_file(), 0, 24 * MIB as usize));
    }

    #[test]
    fn a_member_alone_makes_the_absent_one_out_of_date_and_leaves_the_bitmap() {
        let (f, c) = disk(&[superblock(1, 2, 1, 9, true)]);
        let (found, _) = arrays(f.as_file(), &c);
        let a = &found[0];
        assert_eq!(a.absent(), 1);
        assert!(a.plan_note().contains("1 of its 2 members is not on this disk"), "{}", a.plan_note());
        let w = File::options().read(true).write(true).open(f.path()).expect("test file");
        let said = sync(&w, a, 1_800_000_000).expect("test file");
        assert_eq!(said, "md RAID1 host:0 (partition 3): event count raised to 10 (1 member elsewhere now out of date: recovered in full when added back)");
        assert_eq!(member(f.as_file(), MIB).events, 10);
        // The bitmap stays behind: the kernel then recovers every block.
        assert_eq!(u64::from_le_bytes(read(f.as_file(), MIB + 8192 + 24, 8).try_into().expect("8 bytes")), 5);
    }

    #[test]
    fn other_levels_stale_members_and_twins_are_named() {
        let (f, c) = disk(&[superblock(5, 3, 0, 5, false), superblock(5, 3, 1, 5, false)]);
        let (found, skipped) = arrays(f.as_file(), &c);
        assert!(found.is_empty());
        assert_eq!(skipped.len(), 2);
        assert!(skipped[0].starts_with("partition 3: a member of md RAID5 array host:0, which needs the array assembled"), "{skipped:?}");
        let (f, c) = disk(&[superblock(1, 2, 0, 5, false), superblock(1, 2, 1, 4, false)]);
        let (found, skipped) = arrays(f.as_file(), &c);
        assert_eq!(found[0].members.len(), 1);
        assert_eq!(skipped, ["partition 4: an out-of-date member of md RAID1 array host:0 (event count 4, the others 5); left alone"]);
        let (f, c) = disk(&[superblock(1, 2, 0, 5, false), superblock(1, 2, 0, 5, false)]);
        let (found, skipped) = arrays(f.as_file(), &c);
        assert!(found.is_empty());
        assert!(skipped[0].contains("claim the same slot"), "{skipped:?}");
    }
}
