//! Linux swap: only the header page matters.
//!
//! Layout per the kernel's `include/linux/swap.h` `union swap_header`: the
//! signature `SWAPSPACE2` (v1) or `SWAP-SPACE` (v0) in the last 10 bytes of
//! the first page, whose size is the page size of the machine that ran
//! `mkswap` (4 KiB..64 KiB). v1 keeps `last_page`, the UUID and the label at
//! byte 1024. Everything else is scratch space, so the used map is the header
//! page alone. A hibernation image (`S1SUSPEND` etc.) is not plain swap: it is
//! reported as `Other("swsuspend")` so it is copied whole.

use super::{bytes, label_string, le32, uuid_string, FsError, FsInfo, FsKind};
use crate::read_at::ReadAt;
use crate::Extent;

const PAGE_SIZES: [u64; 5] = [4096, 8192, 16384, 32768, 65536];
const SUSPEND_MAGICS: [&[u8]; 4] = [
    b"S1SUSPEND\0",
    b"S2SUSPEND\0",
    b"ULSUSPEND\0",
    b"LINHIB0001",
];

/// The page size and header version, when `head` holds a swap signature.
fn find(head: &[u8]) -> Option<(u64, u8)> {
    PAGE_SIZES.iter().find_map(|&p| {
        let sig = bytes(head, p as usize - 10, 10);
        if sig == b"SWAPSPACE2" {
            Some((p, 2))
        } else if sig == b"SWAP-SPACE" {
            Some((p, 1))
        } else if SUSPEND_MAGICS.contains(&sig) {
            Some((p, 0))
        } else {
            None
        }
    })
}

pub(crate) fn probe(len: u64, head: &[u8]) -> Result<Option<FsInfo>, FsError> {
    let Some((page, version)) = find(head) else {
        return Ok(None);
    };
    if version == 0 {
        return Ok(Some(FsInfo {
            kind: FsKind::Other("swsuspend".into()),
            label: None,
            uuid: None,
            block_size: page as u32,
            size: len,
            used: None,
            sector_size: None,
        }));
    }
    let (size, uuid, label) = if version == 2 {
        let last_page = u64::from(le32(head, 1028));
        let size = last_page.saturating_add(1).saturating_mul(page).min(len);
        (
            size,
            uuid_string(bytes(head, 1036, 16)),
            label_string(bytes(head, 1052, 16), false),
        )
    } else {
        (len / page * page, None, None)
    };
    Ok(Some(FsInfo {
        kind: FsKind::Swap,
        label,
        uuid,
        block_size: page as u32,
        size,
        used: None,
        sector_size: None,
    }))
}

pub(crate) fn used_extents(dev: &dyn ReadAt, len: u64) -> Result<Vec<Extent>, FsError> {
    let head = super::read_vec(dev, 0, len.min(65536), 65536, "swap")?;
    match find(&head) {
        Some((page, 1 | 2)) => Ok(vec![Extent::new(0, page.min(len))]),
        _ => Err(FsError::Corrupt {
            kind: "swap",
            offset: 0,
            what: "no swap signature".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::testutil::{expected, fixture};
    use crate::fs::{probe as probe_any, used_extents as used_any};

    #[test]
    fn mkswap_header() {
        let img = fixture("swap.img");
        let len = img.len() as u64;
        let info = probe_any(&img, len).expect("probe").expect("swap");
        assert_eq!(info.kind, FsKind::Swap);
        assert_eq!(info.uuid, expected("swap.img", "uuid"));
        assert_eq!(info.label, expected("swap.img", "label"));
        assert_eq!(info.size, len);
        assert_eq!(
            used_any(&img, len, &info).expect("map"),
            vec![Extent::new(0, 4096)]
        );
    }

    #[test]
    fn page_sizes_and_hibernation() {
        let mut img = vec![0u8; 1 << 20];
        img[65536 - 10..65536].copy_from_slice(b"SWAPSPACE2");
        img[1028..1032].copy_from_slice(&15u32.to_le_bytes());
        let info = probe_any(&img, 1 << 20).expect("probe").expect("swap");
        assert_eq!((info.block_size, info.size), (65536, 1 << 20));
        assert_eq!(
            used_any(&img, 65536, &info).expect("map"),
            vec![Extent::new(0, 65536)]
        );
        let mut img = vec![0u8; 8192];
        img[4086..4096].copy_from_slice(b"S1SUSPEND\0");
        let info = probe_any(&img, 8192).expect("probe").expect("swsuspend");
        assert_eq!(info.kind, FsKind::Other("swsuspend".into()));
        assert!(used_any(&img, 8192, &info).is_err());
    }
}
