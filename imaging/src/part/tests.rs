//! Unit tests on synthetic tables and corrupted copies of the tool-made
//! fixtures (tests/fixtures/part, see scripts/fixtures/gen-part.sh). The
//! round trips through sfdisk/sgdisk live in tests/part_tables.rs.

use super::*;

const MIB: u64 = 1 << 20;

fn gpt_part(number: u32, start_mib: u64, len_mib: u64, ptype: &str, name: &str) -> Partition {
    Partition {
        number,
        start: start_mib * MIB,
        len: len_mib * MIB,
        ptype: PartType::Gpt(ptype.to_string()),
        guid: Some(format!("aaaaaaaa-bbbb-4ccc-8ddd-{number:012x}")),
        name: name.to_string(),
        attributes: if number == 1 { 1 } else { 0 },
        bootable: false,
        logical: false,
    }
}

fn mbr_part(number: u32, start_mib: u64, len_mib: u64, ty: u8) -> Partition {
    Partition {
        number,
        start: start_mib * MIB,
        len: len_mib * MIB,
        ptype: PartType::Mbr(ty),
        guid: None,
        name: String::new(),
        attributes: 0,
        bootable: number == 1,
        logical: number >= 5,
    }
}

fn gpt_table(ss: u32, disk_len: u64) -> PartitionTable {
    let arr = 16384 / u64::from(ss);
    PartitionTable {
        kind: TableKind::Gpt,
        sector_size: ss,
        disk_id: "01234567-89ab-4def-8123-456789abcdef".into(),
        first_usable: (2 + arr) * u64::from(ss),
        last_usable: disk_len - (1 + arr) * u64::from(ss),
        partitions: vec![
            gpt_part(1, 1, 2, guids::EFI_SYSTEM, "EFI"),
            gpt_part(3, 3, 2, guids::MS_BASIC_DATA, "Windows ☃"),
            gpt_part(
                2,
                5,
                2,
                guids::LINUX_FS,
                "a name of exactly 36 characters long",
            ),
        ],
        max_entries: 128,
        warnings: vec![],
    }
}

fn mbr_table(ss: u32, disk_len: u64) -> PartitionTable {
    PartitionTable {
        kind: TableKind::Mbr,
        sector_size: ss,
        disk_id: "deadbeef".into(),
        first_usable: u64::from(ss),
        last_usable: disk_len,
        partitions: vec![
            mbr_part(1, 1, 1, 0x07),
            mbr_part(2, 2, 8, 0x05),
            mbr_part(5, 3, 1, 0x83),
            mbr_part(6, 5, 1, 0x82),
            mbr_part(7, 7, 3, 0x0c),
        ],
        max_entries: 4,
        warnings: vec![],
    }
}

fn disk(t: &PartitionTable, len: u64) -> Vec<u8> {
    let mut d = vec![0u8; len as usize];
    for w in serialize(t, len, None).expect("serialize") {
        d[w.offset as usize..w.offset as usize + w.data.len()].copy_from_slice(&w.data);
    }
    d
}

/// Recompute a GPT header's CRC after editing it (header at `off`).
fn fix_header_crc(d: &mut [u8], off: usize) {
    d[off + 16..off + 20].fill(0);
    let crc = crc32fast::hash(&d[off..off + 92]);
    d[off + 16..off + 20].copy_from_slice(&crc.to_le_bytes());
}

fn fixture(bytes: &[u8], head: usize) -> (Vec<u8>, Vec<u8>) {
    let raw = zstd::decode_all(bytes).expect("zstd");
    let (h, t) = raw.split_at(head);
    (h.to_vec(), t.to_vec())
}

#[test]
fn guid_text_and_disk_order() {
    let esp = [
        0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9,
        0x3b,
    ];
    assert_eq!(guid_to_string(&esp), guids::EFI_SYSTEM);
    assert_eq!(guid_from_str(&guids::EFI_SYSTEM.to_uppercase()), Some(esp));
    assert_eq!(guid_from_str("c12a7328-f81f-11d2-ba4b-00a0c93ec93"), None);
    assert_eq!(guid_from_str("c12a7328-f81f-11d2-ba4b-00a0c93ec93g"), None);
    assert_eq!(guid_from_str("c12a7328+f81f-11d2-ba4b-00a0c93ec93b"), None);
    let g = new_guid();
    assert_ne!(g, new_guid());
    assert_eq!(&g[14..15], "4", "version 4: {g}");
    assert!("89ab".contains(&g[19..20]), "RFC 4122 variant: {g}");
}

#[test]
fn type_names_and_predicates() {
    let g = |s: &str| PartType::Gpt(s.to_string());
    assert_eq!(g(guids::MS_RESERVED).describe(), "Microsoft reserved");
    assert_eq!(
        g(&guids::LINUX_ROOT_X86_64.to_uppercase()).describe(),
        "Linux root (x86-64)"
    );
    assert_eq!(
        g("00000000-1111-2222-3333-444444444444").describe(),
        "00000000-1111-2222-3333-444444444444"
    );
    assert_eq!(PartType::Mbr(0x07).describe(), "NTFS/exFAT/HPFS (0x07)");
    assert_eq!(PartType::Mbr(0x0c).describe(), "FAT32 LBA (0x0c)");
    assert_eq!(PartType::Mbr(0x05).describe(), "extended");
    assert_eq!(PartType::Mbr(0x99).describe(), "type 0x99");
    assert!(g(guids::EFI_SYSTEM).is_esp() && PartType::Mbr(0xef).is_esp());
    assert!(g(guids::MS_RESERVED).is_msr() && g(guids::MS_RECOVERY).is_windows_recovery());
    assert!(g(guids::BIOS_BOOT).is_bios_boot() && g(guids::LINUX_SWAP).is_swap());
    assert!(PartType::Mbr(0x0f).is_extended() && PartType::Mbr(0x85).is_extended());
    assert!(!g(guids::LINUX_FS).is_extended());
    assert!(g(guids::LINUX_HOME).is_linux_data() && PartType::Mbr(0x83).is_linux_data());
    assert!(!g(guids::LINUX_LVM).is_linux_data());
    assert!(g(guids::MS_BASIC_DATA).is_windows_data() && PartType::Mbr(0x17).is_windows_data());
    assert!(!PartType::Mbr(0x82).is_windows_data());
}

#[test]
fn gpt_round_trip_both_sector_sizes() {
    for ss in [512u32, 4096] {
        let len = 16 * MIB;
        let mut t = gpt_table(ss, len);
        let d = disk(&t, len);
        let back = read(&d, len, ss).expect("read").expect("table");
        t.partitions.sort_by_key(|p| p.start);
        assert_eq!(back, t, "sector size {ss}");
        assert_eq!(back.partitions[1].name, "Windows ☃");
    }
}

#[test]
fn gpt_new_guids_for_missing_ones() {
    let len = 16 * MIB;
    let mut t = gpt_table(512, len);
    t.disk_id.clear();
    t.partitions[0].guid = None;
    let d = disk(&t, len);
    let back = read(&d, len, 512).expect("read").expect("table");
    assert!(guid_from_str(&back.disk_id).is_some());
    assert!(back.partitions[0]
        .guid
        .as_deref()
        .and_then(guid_from_str)
        .is_some());
}

#[test]
fn gpt_damaged_primary_falls_back_then_fails_cleanly() {
    let len = 8 * MIB;
    let t = gpt_table(512, len);
    let good = disk(&t, len);
    let last = (len - 512) as usize;

    // Primary header CRC broken: backup used, with a warning.
    let mut d = good.clone();
    d[512 + 40] ^= 1;
    let r = read(&d, len, 512).expect("read").expect("table");
    assert_eq!(r.partitions.len(), 3);
    assert!(
        r.warnings[0].contains("used the backup"),
        "{:?}",
        r.warnings
    );

    // Backup damaged only: primary used, warning.
    let mut d = good.clone();
    d[last + 8] ^= 1;
    let r = read(&d, len, 512).expect("read").expect("table");
    assert!(
        r.warnings[0].contains("backup GPT damaged"),
        "{:?}",
        r.warnings
    );

    // Both headers broken.
    let mut d = good.clone();
    d[512 + 40] ^= 1;
    d[last + 40] ^= 1;
    match read(&d, len, 512) {
        Err(PartError::GptUnreadable { primary, backup }) => {
            assert!(
                matches!(*primary, PartError::GptHeaderCrc { lba: 1, .. }),
                "{primary}"
            );
            assert!(
                matches!(*backup, PartError::GptHeaderCrc { .. }),
                "{backup}"
            );
        }
        other => panic!("{other:?}"),
    }

    // Entry arrays' CRC broken in both copies.
    let mut d = good.clone();
    d[1024 + 60] ^= 1;
    d[last - 16384 + 60] ^= 1;
    let e = read(&d, len, 512).expect_err("both arrays bad");
    assert!(e.to_string().contains("CRC32 mismatch"), "{e}");
    assert!(!e.hint().is_empty());

    // A huge entry count (CRC fixed up): refused before allocating.
    let mut d = good.clone();
    for off in [512, last] {
        d[off + 80..off + 84].copy_from_slice(&0x4000_0000u32.to_le_bytes());
        fix_header_crc(&mut d, off);
    }
    match read(&d, len, 512) {
        Err(PartError::GptUnreadable { primary, .. }) => {
            assert!(
                matches!(*primary, PartError::GptHeaderInvalid { .. }),
                "{primary}"
            )
        }
        other => panic!("{other:?}"),
    }

    // Entry size not 128 x 2^n; header size out of range; wrong MyLBA.
    for (field, value) in [(84usize, 200u32), (84, 0), (12, 8), (12, 600), (24, 7)] {
        let mut d = good.clone();
        for off in [512, last] {
            d[off + field..off + field + 4].copy_from_slice(&value.to_le_bytes());
            fix_header_crc(&mut d, off);
        }
        assert!(read(&d, len, 512).is_err(), "field {field} = {value}");
    }
    // LBAs whose byte offsets overflow u64.
    for (field, value) in [
        (48usize, u64::MAX),
        (48, u64::MAX / 512),
        (40, u64::MAX),
        (72, u64::MAX),
    ] {
        let mut d = good.clone();
        for off in [512, last] {
            d[off + field..off + field + 8].copy_from_slice(&value.to_le_bytes());
            fix_header_crc(&mut d, off);
        }
        assert!(read(&d, len, 512).is_err(), "field {field} = {value}");
    }
}

#[test]
fn gpt_entry_with_end_before_start_is_an_error() {
    let len = 8 * MIB;
    let mut d = disk(&gpt_table(512, len), len);
    let e = 1024; // entry 1
    d[e + 40..e + 48].copy_from_slice(&1u64.to_le_bytes());
    let crc = crc32fast::hash(&d[1024..1024 + 16384]);
    d[512 + 88..512 + 92].copy_from_slice(&crc.to_le_bytes());
    fix_header_crc(&mut d, 512);
    match read(&d, len, 512) {
        Err(PartError::GptEntryInvalid { index: 0, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncated_disks_are_errors_not_panics() {
    let len = 8 * MIB;
    let d = disk(&gpt_table(512, len), len);
    for keep in [0usize, 100, 511, 512, 600, 1024, 4096, 17000, 17408] {
        let short = &d[..keep];
        // The caller believes the disk is bigger than the data: I/O errors.
        let r = read(&short, len, 512);
        if keep < 512 {
            assert!(matches!(r, Err(PartError::Io { .. })), "{keep}: {r:?}");
        } else if keep < 17408 {
            assert!(r.is_err(), "{keep}: {r:?}");
        } else {
            // Primary complete, backup missing: read, with the reason.
            let t = r.expect("primary intact").expect("table");
            assert!(
                t.warnings[0].contains("backup GPT damaged"),
                "{:?}",
                t.warnings
            );
            assert!(
                t.warnings[0].contains("read past the end"),
                "{:?}",
                t.warnings
            );
        }
        // Or knows its real length: no table, or an error.
        let _ = read(&short, keep as u64, 512);
        let _ = read(&short, keep as u64, 4096);
    }
}

#[test]
fn mbr_round_trip_with_logicals() {
    for ss in [512u32, 4096] {
        let len = 12 * MIB;
        let t = mbr_table(ss, len);
        let d = disk(&t, len);
        let back = read(&d, len, ss).expect("read").expect("table");
        assert_eq!(back, t, "sector size {ss}");
        // EBRs: at the extended start, then right after each logical.
        let ext = table_extents(&t, len);
        let ssz = u64::from(ss);
        assert_eq!(
            ext,
            vec![
                Extent::new(0, ssz),
                Extent::new(2 * MIB, ssz),
                Extent::new(4 * MIB, ssz),
                Extent::new(6 * MIB, ssz)
            ]
        );
    }
}

#[test]
fn mbr_disk_signature_from_sector0_when_not_given() {
    let len = 12 * MIB;
    let mut t = mbr_table(512, len);
    t.disk_id.clear();
    let mut s0 = vec![0xabu8; 512];
    s0[440..444].copy_from_slice(&[1, 2, 3, 4]);
    let w = serialize(&t, len, Some(&s0)).expect("serialize");
    assert_eq!(&w[0].data[..440], &s0[..440], "boot code kept");
    assert_eq!(&w[0].data[440..444], &[1, 2, 3, 4]);
    assert_eq!(&w[0].data[444..446], &[0, 0]);
}

#[test]
fn ebr_loops_and_long_chains_are_rejected() {
    let len = 12 * MIB;
    let t = mbr_table(512, len);
    let good = disk(&t, len);
    let ext_lba = 2 * MIB / 512;
    // The last EBR (at 6 MiB) links back to the first (relative start 0).
    let mut d = good.clone();
    let last_ebr = (6 * MIB) as usize;
    d[last_ebr + 446 + 16 + 4] = 0x05;
    d[last_ebr + 446 + 16 + 8..last_ebr + 446 + 16 + 12].copy_from_slice(&0u32.to_le_bytes());
    d[last_ebr + 446 + 16 + 12..last_ebr + 446 + 16 + 16].copy_from_slice(&1u32.to_le_bytes());
    match read(&d, len, 512) {
        Err(PartError::EbrLoop { lba }) => assert_eq!(lba, ext_lba),
        other => panic!("{other:?}"),
    }

    // A chain of 300 EBRs, one sector apart, no data partitions.
    let mut d = vec![0u8; (4 * MIB) as usize];
    d[446] = 0;
    d[446 + 4] = 0x05;
    d[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    d[446 + 12..446 + 16].copy_from_slice(&5000u32.to_le_bytes());
    d[510] = 0x55;
    d[511] = 0xaa;
    for i in 0..300usize {
        let s = (1 + i) * 512;
        d[s + 446 + 16 + 4] = 0x05;
        d[s + 446 + 16 + 8..s + 446 + 16 + 12].copy_from_slice(&(i as u32 + 1).to_le_bytes());
        d[s + 446 + 16 + 12..s + 446 + 16 + 16].copy_from_slice(&1u32.to_le_bytes());
        d[s + 510] = 0x55;
        d[s + 511] = 0xaa;
    }
    assert!(matches!(
        read(&d, 4 * MIB, 512),
        Err(PartError::TooManyLogical { .. })
    ));
}

#[test]
fn not_a_table() {
    // Blank.
    assert_eq!(read(&vec![0u8; 65536], 65536, 512).expect("read"), None);
    // Shorter than a sector.
    assert_eq!(read(&vec![0u8; 100], 100, 512).expect("read"), None);
    // NTFS boot sector (no table, status bytes happen to be 0).
    let mut s = vec![0u8; 4096];
    s[0..3].copy_from_slice(&[0xeb, 0x52, 0x90]);
    s[3..11].copy_from_slice(b"NTFS    ");
    s[446 + 4] = 0x07;
    s[446 + 12] = 1;
    s[510] = 0x55;
    s[511] = 0xaa;
    assert_eq!(read(&s, 4096, 512).expect("read"), None);
    // Boot code in the entry area (status byte not 0/0x80).
    let mut s = vec![0u8; 4096];
    s[446] = 0x33;
    s[510] = 0x55;
    s[511] = 0xaa;
    assert_eq!(read(&s, 4096, 512).expect("read"), None);
    // An empty MBR *is* a table (no partitions yet).
    s[446] = 0;
    let t = read(&s, 4096, 512).expect("read").expect("empty MBR");
    assert!(t.partitions.is_empty());
    assert!(matches!(
        read(&s, 4096, 1000),
        Err(PartError::BadSectorSize(1000))
    ));
}

#[test]
fn serialize_validates_layouts() {
    let len = 16 * MIB;
    let check = |t: &PartitionTable, want: &str| {
        let e = serialize(t, len, None).expect_err(want);
        assert!(e.to_string().contains(want), "want {want:?}, got {e}");
        assert!(!e.hint().is_empty());
    };
    let mut t = gpt_table(512, len);
    t.partitions[1].start = 2 * MIB;
    check(&t, "overlap");
    let mut t = gpt_table(512, len);
    t.partitions[1].start += 100;
    check(&t, "not a multiple");
    let mut t = gpt_table(512, len);
    t.partitions[2].len = 11 * MIB;
    check(&t, "outside the usable area");
    let mut t = gpt_table(512, len);
    t.partitions[0].start = 512;
    check(&t, "outside the usable area");
    let mut t = gpt_table(512, len);
    t.partitions[0].number = 129;
    check(&t, "number outside");
    let mut t = gpt_table(512, len);
    t.partitions[0].name = "x".repeat(37);
    check(&t, "36 UTF-16");
    let mut t = gpt_table(512, len);
    t.partitions[0].ptype = PartType::Gpt("nope".into());
    check(&t, "type GUID");
    let mut t = gpt_table(512, len);
    t.partitions[0].ptype = PartType::Mbr(7);
    check(&t, "does not match");
    let mut t = gpt_table(512, len);
    t.first_usable = 512 * 20;
    check(&t, "inside the primary GPT entry array");
    let t = gpt_table(512, len);
    assert!(matches!(
        serialize(&t, 20 * 1024, None),
        Err(PartError::DiskTooSmall { .. })
    ));
    assert!(matches!(
        serialize(&t, 64 * 1024, None),
        Err(PartError::OutsideUsable { .. })
    ));

    let mut t = mbr_table(512, len);
    t.partitions[3].start = 4 * MIB; // logical 6 right after logical 5: no EBR room
    check(&t, "no free sector");
    let mut t = mbr_table(512, len);
    t.partitions[4].len = 4 * MIB; // logical 7 beyond the extended end
    check(&t, "inside the extended");
    let mut t = mbr_table(512, len);
    t.partitions[2].number = 3;
    t.partitions[2].logical = false;
    t.partitions[2].start = 10 * MIB + MIB; // no overlap with the extended
    t.partitions[2].number = 9;
    check(&t, "1-4 for primary");
    let mut t = mbr_table(512, len);
    t.partitions[0].ptype = PartType::Mbr(0);
    check(&t, "empty slot");
    let mut t = mbr_table(512, len);
    t.disk_id = "xyz".into();
    check(&t, "disk signature");

    // MBR LBAs beyond 32 bits.
    let big = 3u64 << 40;
    let mut t = mbr_table(512, big);
    t.partitions.retain(|p| p.number == 1);
    t.partitions[0].start = 2u64 << 40;
    match serialize(&t, big, None) {
        Err(PartError::MbrLbaTooLarge { number: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn protective_mbr_per_spec() {
    let len = 16 * MIB;
    let w = serialize(&gpt_table(512, len), len, Some(&[0x90; 512])).expect("serialize");
    let s = &w[0].data;
    assert_eq!(&s[..440], &[0x90; 440][..], "boot code kept");
    assert_eq!(&s[440..446], &[0; 6], "disk signature unused");
    let e = &s[446..462];
    assert_eq!(e[0], 0);
    assert_eq!(&e[1..4], &[0x00, 0x02, 0x00], "starting CHS 0x000200");
    assert_eq!(e[4], 0xee);
    assert_eq!(le_u32(e, 8), 1);
    assert_eq!(u64::from(le_u32(e, 12)), len / 512 - 1);
    assert!(s[462..510].iter().all(|&b| b == 0));
    assert_eq!(&s[510..512], &[0x55, 0xaa]);
    // Hybrid: read as GPT with a warning.
    let mut d = disk(&gpt_table(512, len), len);
    d[462 + 4] = 0x0c;
    d[462 + 8..462 + 12].copy_from_slice(&2048u32.to_le_bytes());
    d[462 + 12..462 + 16].copy_from_slice(&4096u32.to_le_bytes());
    let t = read(&d, len, 512).expect("read").expect("table");
    assert_eq!(t.kind, TableKind::Gpt);
    assert!(t.warnings[0].contains("hybrid"));
}

#[test]
fn wiped_sector0_before_a_gpt() {
    let len = 16 * MIB;
    let mut d = disk(&gpt_table(512, len), len);
    d[..512].fill(0);
    let t = read(&d, len, 512).expect("read").expect("table");
    assert_eq!(t.partitions.len(), 3);
    assert!(t.warnings[0].contains("no protective MBR"));
}

/// Deterministic mini-fuzz over the tool-made fixtures, so the common cases
/// are covered without cargo-fuzz: flip bytes in the table sectors, read
/// with both sector sizes, never panic.
#[test]
fn mutated_fixtures_never_panic() {
    let (gh, gt) = fixture(
        include_bytes!("../../tests/fixtures/part/gpt-win-linux.zst"),
        1 << 20,
    );
    let mut gpt = gh[..65536].to_vec();
    gpt.extend_from_slice(&gt[gt.len() - 65536..]);
    let (mh, mt) = fixture(
        include_bytes!("../../tests/fixtures/part/mbr-logical.zst"),
        23 << 20,
    );
    let mut mbr = mh;
    mbr.extend_from_slice(&mt);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Offsets worth mutating: GPT headers/entries; MBR sector 0 and EBRs.
    let gpt_hot: Vec<usize> = (0..1536).chain(gpt.len() - 512..gpt.len()).collect();
    let ebrs: Vec<usize> = [0u64, 5, 8, 11, 14]
        .iter()
        .flat_map(|m| (m * MIB) as usize + 440..(m * MIB) as usize + 512)
        .collect();
    for round in 0..3000 {
        let (d, hot) = if round % 2 == 0 {
            (&mut gpt, &gpt_hot)
        } else {
            (&mut mbr, &ebrs)
        };
        // Mutate in place and undo afterwards (the MBR disk is 24 MiB).
        let mut undo = Vec::new();
        for _ in 0..1 + rnd() % 4 {
            let at = hot[(rnd() % hot.len() as u64) as usize];
            undo.push((at, d[at]));
            d[at] = rnd() as u8;
        }
        let d = &*d;
        for ss in [512, 4096] {
            if let Ok(Some(t)) = read(&d, d.len() as u64, ss) {
                // Whatever was read serializes or is refused, without panics.
                let _ = serialize(&t, d.len() as u64, Some(&d[..512]));
                let _ = table_extents(&t, d.len() as u64);
                let _ = translate(&t, 4096 + 512 - ss);
            }
        }
        let d = if round % 2 == 0 { &mut gpt } else { &mut mbr };
        for (at, b) in undo.into_iter().rev() {
            d[at] = b;
        }
    }
}
