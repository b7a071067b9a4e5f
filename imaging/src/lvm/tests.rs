use super::*;

/// The first MiB of a PV made by scripts/fixtures/gen-lvm.sh.
fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/lvm/{name}.zst", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    zstd::decode_all(&raw[..]).unwrap_or_else(|e| panic!("decompressing {path}: {e}"))
}

/// The INDEX lines of one kind, split at `|`.
fn index(kind: &str) -> Vec<Vec<String>> {
    let path = format!("{}/tests/fixtures/lvm/INDEX", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("INDEX");
    text.lines()
        .filter(|l| l.starts_with(&format!("{kind}|")))
        .map(|l| l.split('|').skip(1).map(str::to_owned).collect())
        .collect()
}

fn pv(name: &str) -> Pv {
    let d = fixture(name);
    read_pv(&d, d.len() as u64).expect("read").expect("a PV")
}

const FILES: [&str; 3] = ["one.img", "two-a.img", "two-b.img"];

#[test]
fn reads_what_lvm_reports() {
    let pvs: Vec<(String, Pv)> = FILES.iter().map(|f| (f.to_string(), pv(f))).collect();
    let file_of = |vg: &Vg, key: &str| -> String {
        let id = &vg.pvs.iter().find(|p| p.key == key).expect("stripe's PV listed").id;
        pvs.iter().find(|(_, p)| &p.uuid == id).map(|(f, _)| f.clone()).expect("stripe's PV is a fixture")
    };
    for l in index("pv") {
        let (_, p) = pvs.iter().find(|(f, _)| *f == l[0]).expect("fixture");
        assert_eq!(p.uuid, l[1], "{}", l[0]);
        let vg = p.vg.as_ref().expect("in a VG");
        let me = vg.pvs.iter().find(|x| x.id == p.uuid).expect("lists itself");
        assert_eq!(me.pe_start.to_string(), l[2], "{}", l[0]);
        assert_eq!(me.pe_count.to_string(), l[3], "{}", l[0]);
    }
    let vgs = index("vg");
    assert_eq!(vgs.len(), 2);
    for l in vgs {
        let groups: Vec<&Vg> = pvs.iter().filter_map(|(_, p)| p.vg.as_ref()).filter(|g| g.name == l[0]).collect();
        assert!(!groups.is_empty(), "{}", l[0]);
        for g in groups {
            assert_eq!((g.id.as_str(), g.extent_size.to_string(), g.seqno.to_string()), (l[1].as_str(), l[2].clone(), l[3].clone()));
        }
    }
    let segs = index("seg");
    assert_eq!(segs.len(), 9);
    for l in segs {
        let vg = pvs.iter().filter_map(|(_, p)| p.vg.as_ref()).find(|g| g.name == l[0]).expect("vg");
        let lv = vg.lvs.iter().find(|x| x.name == l[1]).unwrap_or_else(|| panic!("{}/{}", l[0], l[1]));
        assert_eq!(format_uuid(&lv.id), l[2]);
        assert!(lv.visible());
        let start: u64 = l[4].parse().expect("start");
        let s = lv.segments.iter().find(|s| s.start_extent == start).expect("segment");
        assert_eq!(s.extent_count.to_string(), l[5]);
        assert_eq!(s.stripes.len().to_string(), l[6]);
        // lvs calls a one-stripe "striped" segment linear.
        let kind = if s.kind == "striped" && s.stripes.len() == 1 { "linear" } else { s.kind.as_str() };
        assert_eq!(kind, l[3]);
        let ranges: Vec<String> = s.stripes.iter().map(|(k, pe)| format!("{}:{}-{}", file_of(vg, k), pe, pe + s.extent_count / s.stripes.len() as u64 - 1)).collect();
        assert_eq!(ranges.join(" "), l[7], "{}/{}", l[0], l[1]);
    }
}

#[test]
fn linear_volumes_are_byte_ranges() {
    const MIB: u64 = 1 << 20;
    let one = pv("one.img");
    let vg = one.vg.as_ref().expect("vg");
    assert_eq!(vg.name, "fix-vg");
    let lv = |n: &str| vg.lvs.iter().find(|l| l.name == n).expect("lv").clone();
    assert_eq!(vg.linear_range(&lv("root"), &one.uuid), Ok((MIB, 8 * MIB)));
    assert_eq!(vg.linear_range(&lv("tmp-data"), &one.uuid), Ok((13 * MIB, 2 * MIB)));
    assert_eq!(vg.linear_range(&lv("swap_1"), &one.uuid), Ok((19 * MIB, 2 * MIB)));
    assert_eq!(vg.linear_range(&lv("home"), &one.uuid), Err(NotLinear::Pieces(2)));
    assert_eq!(NotLinear::Pieces(2).to_string(), "it lies in 2 separate pieces");
    assert_eq!(dm_name(&vg.name, "tmp-data"), "fix--vg-tmp--data");

    let (a, b) = (pv("two-a.img"), pv("two-b.img"));
    assert_eq!(a.vg, b.vg, "both PVs hold the same (newest) metadata");
    let vg = a.vg.as_ref().expect("vg");
    let lv = |n: &str| vg.lvs.iter().find(|l| l.name == n).expect("lv").clone();
    assert_eq!(vg.linear_range(&lv("striped"), &a.uuid), Err(NotLinear::Striped(2)));
    assert_eq!(vg.linear_range(&lv("span"), &a.uuid), Err(NotLinear::OtherPv));
    assert_eq!(vg.linear_range(&lv("solo"), &a.uuid), Err(NotLinear::OtherPv));
    assert_eq!(vg.pvs[1].pe_start, 64 << 10, "--dataalignment 64k");
    assert_eq!(vg.linear_range(&lv("solo"), &b.uuid), Ok(((64 << 10) + 17 * MIB, 2 * MIB)));
}

/// The first metadata area's header and its first location record.
fn mda(d: &[u8]) -> (usize, u64, u64, u64) {
    let label = (0..4).map(|s| s * 512).find(|&o| &d[o..o + 8] == LABEL_ID).expect("label");
    let pvh = label + le32(d, label + 20) as usize;
    let mut p = pvh + 40;
    while le64(d, p) != 0 {
        p += 16;
    }
    p += 16;
    let (off, size) = (le64(d, p) as usize, le64(d, p + 8));
    (off, size, le64(d, off + 40), le64(d, off + 48))
}

#[test]
fn metadata_that_wraps_around_its_area_is_read_whole() {
    let d = fixture("two-a.img");
    let (_, size, off, len) = mda(&d);
    assert!(off + len > size, "the fixture's text must wrap (at {off}, {len} bytes, area {size}): regenerate it with more changes");
    let vg = pv("two-a.img").vg.expect("vg");
    assert_eq!(vg.lvs.len(), 3);
}

#[test]
fn damage_is_an_error_not_a_guess() {
    let good = fixture("one.img");
    let (mda_off, _, text_off, len) = mda(&good);
    // A byte of the metadata text.
    let mut d = good.clone();
    d[mda_off + text_off as usize + (len as usize) / 2] ^= 1;
    let e = read_pv(&d, d.len() as u64).expect_err("bad text");
    assert!(e.to_string().contains("bad checksum"), "{e}");
    // The area header.
    let mut d = good.clone();
    d[mda_off + 30] ^= 1;
    assert!(matches!(read_pv(&d, d.len() as u64), Err(LvmError::Damaged(_))));
    // The label.
    let mut d = good.clone();
    d[512 + 40] ^= 1;
    let e = read_pv(&d, d.len() as u64).expect_err("bad label");
    assert!(e.to_string().contains("label's checksum"), "{e}");
    // Cut before the metadata area ends.
    let e = read_pv(&&good[..8192], 8192).expect_err("short");
    assert!(e.to_string().contains("outside the device"), "{e}");
    // No label at all.
    assert!(read_pv(&vec![0u8; 4096], 4096).expect("zeros").is_none());
    assert!(read_pv(&vec![0u8; 100], 100).expect("tiny").is_none());
}

#[test]
fn text_format() {
    let text = r#"
vg0 {   # a comment with "quotes" and { braces
id = "abc\"def"
seqno = 7
extent_size = 8192
status = ["RESIZEABLE", "READ", "WRITE"]
physical_volumes { pv0 { id = "P" pe_start = 2048 pe_count = 100 } }
logical_volumes {
pool { status = ["READ"] segment_count = 1
  segment1 { start_extent = 0 extent_count = 10 type = "thin-pool" metadata = "pool_tmeta" pool = "pool_tdata" } }
thin { id = "T" status = ["READ", "VISIBLE"] segment1 { start_extent = 0 extent_count = 50 type = "thin" thin_pool = "pool" device_id = 1 } }
mirror { status = ["VISIBLE"] segment1 { start_extent = 0 extent_count = 4 type = "raid1" raids = ["mirror_rmeta_0", "mirror_rimage_0"] } }
lin { status = ["VISIBLE"] segment1 { start_extent = 0 extent_count = 4 type = "striped" stripe_count = 1 stripes = ["pv0", 90] } }
}
}
contents = "Text Format Volume Group"
version = 1
"#;
    let vg = parse_vg(text).expect("parse");
    assert_eq!((vg.name.as_str(), vg.id.as_str(), vg.seqno, vg.extent_size), ("vg0", "abc\"def", 7, 4 << 20));
    assert_eq!(vg.pvs, [VgPv { key: "pv0".into(), id: "P".into(), pe_start: 1 << 20, pe_count: 100 }]);
    let lv = |n: &str| vg.lvs.iter().find(|l| l.name == n).expect("lv");
    assert!(!lv("pool").visible());
    assert_eq!(vg.linear_range(lv("thin"), "P"), Err(NotLinear::Kind("thin".into())));
    assert_eq!(vg.linear_range(lv("mirror"), "P"), Err(NotLinear::Kind("raid1".into())));
    assert_eq!(vg.linear_range(lv("lin"), "P"), Ok(((1 << 20) + 90 * (4 << 20), 16 << 20)));
    // Beyond the PV's extents: not a range of it.
    let mut bad = vg.clone();
    bad.pvs[0].pe_count = 92;
    assert_eq!(bad.linear_range(lv("lin"), "P"), Err(NotLinear::Empty));

    for broken in ["vg0 { id = ", "vg0 { a = [1, 2 }", "vg0 { \"x\" = 1 }", "vg0 { extent_size = 0 seqno = 1 }", "", "vg0 { a = \"open }", "vg0 { seqno = 1 extent_size = 8 logical_volumes { l { segment1 { start_extent = 0 extent_count = 1 stripes = [\"pv0\"] } } } }"] {
        assert!(parse_vg(broken).is_err(), "{broken:?}");
    }
    let deep = format!("vg {}{}", "a { ".repeat(100), "} ".repeat(100));
    assert!(parse_text(&deep).is_err(), "nesting is bounded");
    assert_eq!(format_uuid("ldhkVkj4AS53xps5zx8c53cdVU5xQ29Q"), "ldhkVk-j4AS-53xp-s5zx-8c53-cdVU-5xQ29Q");
    assert_eq!(crc(INITIAL_CRC, b""), INITIAL_CRC);
}
