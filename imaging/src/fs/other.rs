//! Signatures of filesystems and containers without a used-block reader.
//!
//! Recognising them matters even without a map: the caller must copy them
//! sector by sector, and must not mistake a container (LUKS, md RAID, LVM)
//! for the filesystem that may be visible at its start. Names are `blkid`'s
//! `TYPE` values. Magic numbers and offsets as in util-linux
//! `libblkid/src/superblocks/*.c`.

use super::{
    be32, be64, bytes, label_string, le32, le64, read_at, uuid_string, FsError, FsInfo, FsKind,
};
use crate::read_at::ReadAt;

const MD_MAGIC: u32 = 0xa92b_4efc;

fn info(
    kind: &str,
    block_size: u32,
    size: u64,
    label: Option<String>,
    uuid: Option<String>,
) -> FsInfo {
    FsInfo {
        kind: FsKind::Other(kind.into()),
        label,
        uuid,
        block_size,
        size,
        used: None,
        sector_size: None,
    }
}

/// Containers: LUKS, BitLocker, md RAID (all superblock versions), LVM2 PV.
pub(crate) fn probe_container(
    dev: &dyn ReadAt,
    len: u64,
    head: &[u8],
) -> Result<Option<FsInfo>, FsError> {
    // LUKS1/LUKS2: "LUKS\xba\xbe", UUID as text at 168.
    if bytes(head, 0, 6) == crate::luks::MAGIC {
        let uuid = label_string(bytes(head, 168, 40), false);
        let label = if be32(head, 4) & 0xFFFF == 2 {
            label_string(bytes(head, 24, 48), false)
        } else {
            None
        };
        return Ok(Some(info(crate::luks::FS_KIND, 512, len, label, uuid)));
    }
    // BitLocker: "-FVE-FS-" OEM ID (Windows 7+; Vista's differs, but also has it at 3).
    if bytes(head, 3, 8) == b"-FVE-FS-"
        || bytes(head, 3, 8) == b"MSWIN4.1" && bytes(head, 0x1A0, 8) == b"-FVE-FS-"
    {
        return Ok(Some(info("BitLocker", 512, len, None, None)));
    }
    // md RAID 1.1 (at 0) and 1.2 (at 4 KiB).
    for off in [0usize, 4096] {
        if le32(head, off) == MD_MAGIC && le32(head, off + 4) == 1 {
            return Ok(Some(md_info(bytes(head, off, 256), len)));
        }
    }
    // md RAID 0.90 (last 64 KiB-aligned 64 KiB block) and 1.0 (8 KiB from the end, 4 KiB aligned).
    if len >= 128 * 1024 {
        let v090 = (len & !0xFFFF) - 0x10000;
        let v10 = ((len / 512).saturating_sub(16) & !7) * 512;
        for (off, version) in [(v10, 1u32), (v090, 0)] {
            let mut sb = [0u8; 256];
            if read_at(dev, &mut sb, off).is_ok()
                && le32(&sb, 0) == MD_MAGIC
                && le32(&sb, 4) == version
            {
                let mut i = md_info(&sb, len);
                if version == 0 {
                    // 0.90: UUID words at 0x14 (uuid0) and 0x34.. (uuid1..3).
                    let mut u = Vec::with_capacity(16);
                    for o in [0x14usize, 0x34, 0x38, 0x3C] {
                        u.extend_from_slice(&le32(&sb, o).to_be_bytes());
                    }
                    i.uuid = uuid_string(&u);
                    i.label = None;
                }
                return Ok(Some(i));
            }
        }
    }
    // LVM2: "LABELONE" in one of the first four sectors, "LVM2 001" at +24.
    for s in 0..4usize {
        let o = s * 512;
        if bytes(head, o, 8) == b"LABELONE" && bytes(head, o + 24, 8) == b"LVM2 001" {
            let pv = le32(head, o + 20) as usize;
            let uuid = label_string(bytes(head, o + pv, 32), false);
            return Ok(Some(info("LVM2_member", 512, len, None, uuid)));
        }
    }
    Ok(None)
}

/// md superblock 1.x: set UUID at 0x10, name at 0x20.
fn md_info(sb: &[u8], len: u64) -> FsInfo {
    info(
        "linux_raid_member",
        512,
        len,
        label_string(bytes(sb, 0x20, 32), false),
        uuid_string(bytes(sb, 0x10, 16)),
    )
}

/// Plain filesystems: xfs, btrfs, ISO 9660, jbd (ext external journal is
/// handled by the ext module), HFS+, f2fs, squashfs, ReFS.
pub(crate) fn probe_fs(len: u64, head: &[u8]) -> Result<Option<FsInfo>, FsError> {
    if bytes(head, 0, 4) == b"XFSB" {
        let bs = be32(head, 4);
        let size = be64(head, 8).saturating_mul(u64::from(bs));
        return Ok(Some(info(
            "xfs",
            bs,
            size,
            label_string(bytes(head, 108, 12), false),
            uuid_string(bytes(head, 32, 16)),
        )));
    }
    if bytes(head, 0x10040, 8) == b"_BHRfS_M" {
        let bs = le32(head, 0x10090);
        let size = le64(head, 0x10070);
        return Ok(Some(info(
            "btrfs",
            bs,
            size,
            label_string(bytes(head, 0x1012B, 256), false),
            uuid_string(bytes(head, 0x10020, 16)),
        )));
    }
    if bytes(head, 0x8001, 5) == b"CD001" {
        let label = label_string(bytes(head, 0x8028, 32), true);
        return Ok(Some(info("iso9660", 2048, len, label, None)));
    }
    if bytes(head, 0x400, 2) == b"H+" || bytes(head, 0x400, 2) == b"HX" {
        let bs = be32(head, 0x428);
        return Ok(Some(info("hfsplus", bs, len, None, None)));
    }
    if le32(head, 0x400) == 0xF2F5_2010 {
        return Ok(Some(info(
            "f2fs",
            4096,
            len,
            None,
            uuid_string(bytes(head, 0x400 + 0x6C, 16)),
        )));
    }
    if bytes(head, 0, 4) == b"hsqs" {
        return Ok(Some(info(
            "squashfs",
            le32(head, 12),
            le64(head, 40),
            None,
            None,
        )));
    }
    if bytes(head, 3, 8) == b"ReFS\0\0\0\0" {
        return Ok(Some(info("ReFS", 4096, len, None, None)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use crate::fs::testutil::{expected, fixture};
    use crate::fs::{probe, FsKind};

    fn kind_of(name: &str) -> FsKind {
        let img = fixture(name);
        probe(&img, img.len() as u64)
            .expect("probe")
            .expect("recognised")
            .kind
    }

    #[test]
    fn real_signatures() {
        for (name, kind) in [
            ("xfs.img", "xfs"),
            ("btrfs.img", "btrfs"),
            ("luks.img", "crypto_LUKS"),
            ("lvm.img", "LVM2_member"),
        ] {
            assert_eq!(kind_of(name), FsKind::Other(kind.into()), "{name}");
            let img = fixture(name);
            let info = probe(&img, img.len() as u64)
                .expect("probe")
                .expect("recognised");
            if let Some(u) = expected(name, "uuid") {
                assert_eq!(info.uuid.as_deref(), Some(u.as_str()), "{name} uuid");
            }
        }
    }

    #[test]
    fn md_superblocks_win_over_the_filesystem_inside() {
        // md has no kernel driver in the fixture generator's VM, so these are
        // synthetic: an ext4 image with an md superblock where mdadm puts it.
        let img = fixture("ext4-4k.img");
        let len = img.len() as u64;
        let v10 = ((len / 512 - 16) & !7) * 512;
        let v090 = (len & !0xFFFF) - 0x10000;
        for (off, version) in [(v10, 1u32), (v090, 0), (4096, 1), (0, 1)] {
            let mut md = img.clone();
            let o = off as usize;
            md[o..o + 4].copy_from_slice(&0xa92b_4efcu32.to_le_bytes());
            md[o + 4..o + 8].copy_from_slice(&version.to_le_bytes());
            md[o + 0x10..o + 0x20].copy_from_slice(&[0xab; 16]);
            let info = probe(&md, len).expect("probe").expect("md");
            assert_eq!(
                info.kind,
                FsKind::Other("linux_raid_member".into()),
                "offset {off}"
            );
            assert!(!info.kind.has_used_map());
        }
    }

    #[test]
    fn synthetic_signatures() {
        let mut img = vec![0u8; 70 * 1024];
        img[3..11].copy_from_slice(b"-FVE-FS-");
        assert_eq!(
            probe(&img, img.len() as u64)
                .expect("probe")
                .expect("bl")
                .kind,
            FsKind::Other("BitLocker".into())
        );
        let mut img = vec![0u8; 70 * 1024];
        img[0x8001..0x8006].copy_from_slice(b"CD001");
        assert_eq!(
            probe(&img, img.len() as u64)
                .expect("probe")
                .expect("iso")
                .kind,
            FsKind::Other("iso9660".into())
        );
    }
}
