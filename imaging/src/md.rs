//! Linux md RAID member superblocks (mdadm metadata 1.0, 1.1 and 1.2),
//! read without the kernel's md driver: which array a partition belongs
//! to, its RAID level and this member's role, where the array's data lies
//! in the member, and whether the member is clean.
//!
//! On-disk layout (`struct mdp_superblock_1`, Linux
//! `include/uapi/linux/raid/md_p.h`): little-endian, 256 bytes then one
//! 16-bit role per device slot; at the end of the member (1.0: 8 KiB from
//! the end, 4 KiB aligned), at its start (1.1) or 4 KiB in (1.2). Its
//! checksum is the 32-bit words of the superblock and the role table summed
//! into 64 bits (the checksum field counted as zero), the two halves then
//! added (`calc_sb_1_csum`). Metadata 0.90 (at the end, host-endian) is
//! recognised and reported as such.

use serde::{Deserialize, Serialize};

use crate::fs::{le16, le32, le64};
use crate::read_at::{read_vec, ReadAt};

const MAGIC: u32 = 0xa92b_4efc;
const SECTOR: u64 = 512;
/// `resync_offset` of an array that needs no resync (MaxSector).
const CLEAN: u64 = u64::MAX;
/// More device slots than this is not mdadm's (it allows 1920).
const MAX_DEV_LIMIT: u32 = 1920;

#[derive(Debug, thiserror::Error)]
pub enum MdError {
    #[error("reading the md RAID superblock: {0}")]
    Io(#[from] std::io::Error),
    #[error("damaged md RAID superblock ({version}): {detail}")]
    Damaged { version: &'static str, detail: String },
}

/// This member's part in the array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Active, in slot N of the array.
    Active(u16),
    Spare,
    Faulty,
    /// Being added (journal or replacement).
    Other(u16),
}

/// One member's view of its array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// "1.0", "1.1", "1.2", or "0.90" (only `uuid`, `level` and
    /// `raid_disks` read).
    pub version: String,
    /// The array's UUID as mdadm prints it (`xxxxxxxx:xxxxxxxx:...`).
    pub uuid: String,
    /// The array's name (`host:0`, `md0`), empty for 0.90.
    pub name: String,
    /// RAID level: 0, 1, 4, 5, 6, 10; -1 linear, -4 multipath.
    pub level: i32,
    pub raid_disks: u32,
    pub role: Role,
    /// Where the array's data starts in this member, in bytes.
    pub data_offset: u64,
    /// How much of the array's data this member holds, in bytes.
    pub data_size: u64,
    pub events: u64,
    /// No resync pending (the members agree).
    pub clean: bool,
    /// Where the superblock is in the member, in bytes (1.x).
    #[serde(default)]
    pub sb_at: u64,
    /// The superblock's length with its role table, in bytes (1.x).
    #[serde(default)]
    pub sb_len: u64,
    /// Where the internal write-intent bitmap starts, in bytes from the
    /// superblock (1.x, when the array has one).
    #[serde(default)]
    pub bitmap_at: Option<i64>,
}

impl Member {
    /// "RAID1", "RAID0", "linear", ...
    pub fn level_name(&self) -> String {
        match self.level {
            -1 => "linear".into(),
            -4 => "multipath".into(),
            n => format!("RAID{n}"),
        }
    }
}

/// `calc_sb_1_csum` over the superblock and its `max_dev` roles.
pub fn checksum_1(sb: &[u8]) -> u32 {
    let mut sum: u64 = 0;
    let mut words = sb.chunks_exact(4);
    for (i, w) in words.by_ref().enumerate() {
        // The checksum field itself (offset 216) counts as zero.
        if i != 216 / 4 {
            sum += u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        }
    }
    if let [a, b] = words.remainder() {
        sum += u64::from(u16::from_le_bytes([*a, *b]));
    }
    ((sum & 0xffff_ffff) + (sum >> 32)) as u32
}

/// A 1.x superblock (`sb`, with its role table, as read from the member)
/// with its event count set to `events` and its update time to
/// `unix_secs`, checksum recomputed. The superblock is checked first: it
/// must still be a valid 1.x superblock.
///
/// md assembles an array from the members with the highest event count
/// and treats the others as out of date (they are recovered in full when
/// added back), so raising it on members written offline keeps md from
/// mixing them with copies that were not.
pub fn with_events(sb: &[u8], events: u64, unix_secs: u64) -> Result<Vec<u8>, MdError> {
    let damaged = |detail: String| MdError::Damaged { version: "1.x", detail };
    if sb.len() < 256 || le32(sb, 0) != MAGIC || le32(sb, 4) != 1 || sb.len() as u64 != 256 + 2 * u64::from(le32(sb, 220)) {
        return Err(damaged("not a 1.x superblock with its role table".into()));
    }
    if le32(sb, 216) != checksum_1(sb) {
        return Err(damaged(format!("checksum {:#010x}, computed {:#010x}", le32(sb, 216), checksum_1(sb))));
    }
    let mut out = sb.to_vec();
    out[200..208].copy_from_slice(&events.to_le_bytes());
    // utime: seconds in the low 40 bits, microseconds above.
    out[192..200].copy_from_slice(&(unix_secs & ((1 << 40) - 1)).to_le_bytes());
    let c = checksum_1(&out);
    out[216..220].copy_from_slice(&c.to_le_bytes());
    Ok(out)
}

/// The write-intent bitmap's superblock magic ("bitm").
pub const BITMAP_MAGIC: u32 = 0x6d74_6962;

/// A bitmap superblock (`bitmap_super_t`, 256 bytes, no checksum) with its
/// event count set to `events`; `None` when `b` is not one.
///
/// The kernel treats a bitmap whose events are behind the array's as out
/// of date and recovers every block ("forcing full recovery"): set it only
/// when every member holds the same data.
pub fn bitmap_with_events(b: &[u8], events: u64) -> Option<Vec<u8>> {
    if b.len() < 256 || le32(b, 0) != BITMAP_MAGIC {
        return None;
    }
    let mut out = b.to_vec();
    out[24..32].copy_from_slice(&events.to_le_bytes());
    Some(out)
}

fn uuid_string(b: &[u8]) -> String {
    b.chunks(4).map(|c| c.iter().map(|x| format!("{x:02x}")).collect::<String>()).collect::<Vec<_>>().join(":")
}

/// Where each 1.x version keeps its superblock on a member of `len` bytes.
fn places_1(len: u64) -> [(&'static str, u64); 3] {
    let sectors = len / SECTOR;
    let end = (sectors.saturating_sub(16) & !7) * SECTOR;
    [("1.2", 4096), ("1.1", 0), ("1.0", end)]
}

/// Read the md superblock of a member of `len` bytes; `None` when there
/// is none.
pub fn read_member(dev: &dyn ReadAt, len: u64) -> Result<Option<Member>, MdError> {
    for (version, at) in places_1(len) {
        if at + 256 > len {
            continue;
        }
        let head = read_vec(dev, at, 256, 256)?;
        if le32(&head, 0) != MAGIC || le32(&head, 4) != 1 {
            continue;
        }
        let damaged = |detail: String| MdError::Damaged { version, detail };
        let max_dev = le32(&head, 220);
        if max_dev > MAX_DEV_LIMIT {
            return Err(damaged(format!("{max_dev} device slots")));
        }
        let full_len = 256 + 2 * u64::from(max_dev);
        let sb = read_vec(dev, at, full_len, full_len)?;
        let want = le32(&sb, 216);
        let got = checksum_1(&sb);
        if want != got {
            return Err(damaged(format!("checksum {want:#010x}, computed {got:#010x}")));
        }
        // Sector counts in bytes; `None` for counts no disk has.
        let bytes = |o: usize| le64(&sb, o).checked_mul(SECTOR);
        if bytes(144) != Some(at) {
            return Err(damaged(format!("it says it is at sector {}, found at byte {at}", le64(&sb, 144))));
        }
        let (data_offset, data_size) = match (bytes(128), bytes(136)) {
            (Some(o), Some(n)) if o.checked_add(n).is_some_and(|end| end <= len) => (o, n),
            _ => return Err(damaged(format!("data at sector {}, {} sectors, is beyond the member's {len} bytes", le64(&sb, 128), le64(&sb, 136)))),
        };
        let dev_number = le32(&sb, 160);
        let role = if dev_number < max_dev {
            match le16(&sb, 256 + 2 * dev_number as usize) {
                0xffff => Role::Spare,
                0xfffe => Role::Faulty,
                r if (r as u32) < le32(&sb, 92) => Role::Active(r),
                r => Role::Other(r),
            }
        } else {
            return Err(damaged(format!("device number {dev_number} is beyond its {max_dev} slots")));
        };
        let name_raw = &sb[32..64];
        let name = String::from_utf8_lossy(&name_raw[..name_raw.iter().position(|b| *b == 0).unwrap_or(32)]).into_owned();
        return Ok(Some(Member {
            version: version.into(),
            uuid: uuid_string(&sb[16..32]),
            name,
            level: le32(&sb, 72) as i32,
            raid_disks: le32(&sb, 92),
            role,
            data_offset,
            data_size,
            events: le64(&sb, 200),
            clean: le64(&sb, 208) == CLEAN,
            sb_at: at,
            sb_len: full_len,
            // feature_map bit 0: an internal bitmap, `bitmap_offset`
            // (signed sectors) from the superblock.
            bitmap_at: (le32(&sb, 8) & 1 == 1).then(|| i64::from(le32(&sb, 96) as i32) * SECTOR as i64),
        }));
    }
    // 0.90: 4 KiB, 64 KiB-aligned, 64 KiB before the end.
    if len >= 128 << 10 {
        let at = (len & !0xffff) - 0x10000;
        let sb = read_vec(dev, at, 4096, 4096)?;
        if le32(&sb, 0) == MAGIC && le32(&sb, 4) == 0 {
            let mut uuid = sb[20..24].to_vec();
            uuid.extend_from_slice(&sb[52..64]);
            let size = u64::from(le32(&sb, 32)) * 1024;
            return Ok(Some(Member {
                version: "0.90".into(),
                uuid: uuid_string(&uuid),
                name: String::new(),
                level: le32(&sb, 28) as i32,
                raid_disks: le32(&sb, 40),
                role: Role::Other(u16::MAX),
                data_offset: 0,
                data_size: size.min(at),
                events: 0,
                clean: false,
                sb_at: at,
                sb_len: 0,
                bitmap_at: None,
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1.x superblock as mdadm writes it for member `dev_number` of a
    /// two-disk RAID1 (`max_dev` 2 roles).
    fn superblock(at: u64, data_offset: u64, data_size: u64, dev_number: u32, roles: [u16; 2]) -> Vec<u8> {
        let mut sb = vec![0u8; 256 + 4];
        sb[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        sb[4..8].copy_from_slice(&1u32.to_le_bytes());
        sb[16..32].copy_from_slice(&[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00]);
        sb[32..40].copy_from_slice(b"debian:0");
        sb[72..76].copy_from_slice(&1u32.to_le_bytes());
        sb[80..88].copy_from_slice(&(data_size / SECTOR).to_le_bytes());
        sb[92..96].copy_from_slice(&2u32.to_le_bytes());
        sb[128..136].copy_from_slice(&(data_offset / SECTOR).to_le_bytes());
        sb[136..144].copy_from_slice(&(data_size / SECTOR).to_le_bytes());
        sb[144..152].copy_from_slice(&(at / SECTOR).to_le_bytes());
        sb[160..164].copy_from_slice(&dev_number.to_le_bytes());
        sb[200..208].copy_from_slice(&7u64.to_le_bytes());
        sb[208..216].copy_from_slice(&u64::MAX.to_le_bytes());
        sb[220..224].copy_from_slice(&2u32.to_le_bytes());
        sb[256..258].copy_from_slice(&roles[0].to_le_bytes());
        sb[258..260].copy_from_slice(&roles[1].to_le_bytes());
        let c = checksum_1(&sb);
        sb[216..220].copy_from_slice(&c.to_le_bytes());
        sb
    }

    fn member_with(len: u64, at: u64, sb: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; len as usize];
        m[at as usize..at as usize + sb.len()].copy_from_slice(sb);
        m
    }

    #[test]
    fn checksum_folds_the_carry() {
        // Two words of 0xffffffff: 0x1_fffffffe folds to 0xffffffff.
        let mut sb = vec![0u8; 256];
        sb[0..8].copy_from_slice(&[0xff; 8]);
        sb[216..220].copy_from_slice(&[0xaa; 4]);
        assert_eq!(checksum_1(&sb), 0xffff_ffff);
        // A trailing 16-bit role counts as a half word.
        sb.extend_from_slice(&[1, 0]);
        assert_eq!(checksum_1(&sb), 0);
    }

    #[test]
    fn reads_each_version_where_mdadm_puts_it() {
        let len = 4u64 << 20;
        let end = ((len / SECTOR - 16) & !7) * SECTOR;
        for (version, at, data_offset) in [("1.2", 4096, 1 << 20), ("1.1", 0, 1 << 20), ("1.0", end, 0)] {
            let size = (2 << 20) as u64;
            let m = member_with(len, at, &superblock(at, data_offset, size, 1, [0, 1]));
            let got = read_member(&m, len).expect("reads").expect("a member");
            assert_eq!(got.version, version);
            assert_eq!(got.uuid, "11223344:55667788:99aabbcc:ddeeff00");
            assert_eq!(got.name, "debian:0");
            assert_eq!((got.level, got.level_name().as_str(), got.raid_disks), (1, "RAID1", 2));
            assert_eq!(got.role, Role::Active(1));
            assert_eq!((got.data_offset, got.data_size), (data_offset, size));
            assert_eq!((got.events, got.clean), (7, true));
        }
        assert!(read_member(&vec![0u8; len as usize], len).expect("reads").is_none());
    }

    #[test]
    fn roles_and_damage() {
        let len = 4u64 << 20;
        let role = |roles: [u16; 2]| read_member(&member_with(len, 4096, &superblock(4096, 1 << 20, 1 << 20, 0, roles)), len).expect("ok").expect("member").role;
        assert_eq!(role([0xffff, 0]), Role::Spare);
        assert_eq!(role([0xfffe, 0]), Role::Faulty);
        assert_eq!(role([5, 0]), Role::Other(5));
        // A flipped byte anywhere in the superblock or roles.
        let good = superblock(4096, 1 << 20, 1 << 20, 0, [0, 1]);
        for i in [0x20, 0x80, 200, 257] {
            let mut sb = good.clone();
            sb[i] ^= 1;
            let e = read_member(&member_with(len, 4096, &sb), len).expect_err("damaged");
            assert!(e.to_string().contains("checksum"), "{e}");
        }
        // Data beyond the member, a superblock that is not where it says.
        let e = read_member(&member_with(len, 4096, &superblock(4096, 1 << 20, len, 0, [0, 1])), len).expect_err("beyond");
        assert!(e.to_string().contains("beyond"), "{e}");
        let e = read_member(&member_with(len, 4096, &superblock(0, 1 << 20, 1 << 20, 0, [0, 1])), len).expect_err("moved");
        assert!(e.to_string().contains("it says it is at sector 0, found at byte 4096"), "{e}");
    }

    #[test]
    fn raised_events_keep_a_valid_superblock() {
        let len = 4u64 << 20;
        let sb = superblock(4096, 1 << 20, 2 << 20, 0, [0, 1]);
        let up = with_events(&sb, 8, 1_700_000_000).expect("valid");
        let got = read_member(&member_with(len, 4096, &up), len).expect("reads").expect("member");
        assert_eq!((got.events, got.sb_at, got.sb_len, got.bitmap_at), (8, 4096, 260, None));
        assert_eq!(le64(&up, 192), 1_700_000_000);
        // Only events, utime and the checksum changed.
        let diff: Vec<usize> = (0..sb.len()).filter(|&i| sb[i] != up[i]).collect();
        assert!(diff.iter().all(|&i| (192..208).contains(&i) || (216..220).contains(&i)), "{diff:?}");
        let mut bad = sb.clone();
        bad[40] ^= 1;
        assert!(with_events(&bad, 8, 0).is_err());
        assert!(with_events(&sb[..256], 8, 0).is_err(), "without its role table");
        // A bitmap: feature bit 0 and its offset, 8 sectors after.
        let mut sb = sb.clone();
        sb[8] = 1;
        sb[96..100].copy_from_slice(&8i32.to_le_bytes());
        let c = checksum_1(&sb);
        sb[216..220].copy_from_slice(&c.to_le_bytes());
        let got = read_member(&member_with(len, 4096, &sb), len).expect("reads").expect("member");
        assert_eq!(got.bitmap_at, Some(4096));
        let mut b = vec![0u8; 256];
        b[0..4].copy_from_slice(&BITMAP_MAGIC.to_le_bytes());
        let nb = bitmap_with_events(&b, 9).expect("a bitmap");
        assert_eq!(le64(&nb, 24), 9);
        assert!(bitmap_with_events(&[0u8; 256], 9).is_none());
    }

    #[test]
    fn metadata_0_90_is_recognised() {
        let len = 1u64 << 20;
        let at = (len & !0xffff) - 0x10000;
        let mut m = vec![0u8; len as usize];
        let o = at as usize;
        m[o..o + 4].copy_from_slice(&MAGIC.to_le_bytes());
        m[o + 20..o + 24].copy_from_slice(&[1, 2, 3, 4]);
        m[o + 28..o + 32].copy_from_slice(&1u32.to_le_bytes());
        m[o + 32..o + 36].copy_from_slice(&512u32.to_le_bytes());
        m[o + 40..o + 44].copy_from_slice(&2u32.to_le_bytes());
        let got = read_member(&m, len).expect("reads").expect("member");
        assert_eq!((got.version.as_str(), got.level, got.raid_disks, got.data_size), ("0.90", 1, 2, 512 << 10));
        assert!(got.uuid.starts_with("01020304:"));
    }
}
