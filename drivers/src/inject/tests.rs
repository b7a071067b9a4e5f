//! Injection on the real Windows 7 / 8.1 / 10 SYSTEM hives, checked with
//! python3-hivex: the full export after `apply` must equal the export before
//! with exactly the plan's changes applied (a model of the registry tree).

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::testutil::{hex, hivex_dump, regipy};
use crate::windows::{find_installations, profile};

/// Registry tree model built from a hivex dump, with the plan applied to it.
#[derive(Default)]
struct Model {
    /// upper-case path -> (path as stored, upper-case value name -> value)
    keys: BTreeMap<String, (String, Values)>,
}

/// upper-case name -> (name as stored, type, data hex)
type Values = BTreeMap<String, (String, u32, String)>;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).expect("hex"))
        .collect()
}

impl Model {
    fn from_dump(lines: &[String]) -> Model {
        let mut m = Model::default();
        for l in lines {
            let parts: Vec<&str> = l.split('\t').collect();
            if parts.len() == 4 {
                let name = String::from_utf8(unhex(parts[1])).expect("utf8");
                let t: u32 = parts[2].parse().expect("type");
                let entry = m
                    .keys
                    .entry(parts[0].to_uppercase())
                    .or_insert_with(|| (parts[0].to_owned(), BTreeMap::new()));
                entry
                    .1
                    .insert(name.to_uppercase(), (name, t, parts[3].to_owned()));
            } else {
                m.keys
                    .entry(l.to_uppercase())
                    .or_insert_with(|| (l.clone(), BTreeMap::new()));
            }
        }
        m
    }

    fn ensure(&mut self, key: &str) -> String {
        let mut display = String::new();
        let mut upper = String::new();
        for comp in key.split('\\') {
            let (nu, nd) = if upper.is_empty() {
                (comp.to_uppercase(), comp.to_owned())
            } else {
                (
                    format!("{upper}\\{}", comp.to_uppercase()),
                    format!("{display}\\{comp}"),
                )
            };
            let e = self
                .keys
                .entry(nu.clone())
                .or_insert_with(|| (nd, BTreeMap::new()));
            display = e.0.clone();
            upper = nu;
        }
        upper
    }

    fn apply(&mut self, plan: &Plan) {
        for a in &plan.actions {
            match a {
                Action::CreateKey { key, .. } => {
                    self.ensure(key);
                }
                Action::SetValue {
                    key,
                    name,
                    reg_type,
                    data,
                    ..
                } => {
                    let u = self.ensure(key);
                    let vals = &mut self.keys.get_mut(&u).expect("key").1;
                    let stored = vals
                        .get(&name.to_uppercase())
                        .map(|v| v.0.clone())
                        .unwrap_or_else(|| name.clone());
                    vals.insert(name.to_uppercase(), (stored, *reg_type, hex(data)));
                }
                Action::DeleteValue { key, name, .. } => {
                    if let Some(k) = self.keys.get_mut(&key.to_uppercase()) {
                        k.1.remove(&name.to_uppercase());
                    }
                }
                Action::DeleteKey { key, .. } => {
                    let u = key.to_uppercase();
                    let pre = format!("{u}\\");
                    self.keys.retain(|k, _| *k != u && !k.starts_with(&pre));
                }
                Action::CopyFile { .. } => {}
            }
        }
    }

    fn lines(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (display, vals) in self.keys.values() {
            out.insert(display.clone());
            for (name, t, data) in vals.values() {
                out.insert(format!("{display}\t{}\t{t}\t{data}", hex(name.as_bytes())));
            }
        }
        out
    }
}

/// What stampinf does for virtio-win (substitutions listed in testdata/README.md).
fn stamp(inx: &str, decoration: &str, dirid: u32) -> String {
    inx.replace("NT$ARCH$", decoration)
        .replace("INX_PLATFORM_DRIVERS_DIR", &dirid.to_string())
        .replace("_INX_SUBSYS_VENDOR_ID", "1AF4")
        .replace("INX_COMPANY", "Red Hat, Inc.")
        .replace("INX_PREFIX_VENDOR", "Red Hat ")
        .replace("INX_COPYRIGHT_1", "Copyright (c) 2008-2024 Red Hat Inc.")
        .replace("INX_COPYRIGHT_2", "")
        .replace(
            "DriverVer=01/01/2008,0.0.0.1 ; this line will be replaced with stampinf",
            "DriverVer = 02/25/2024,100.94.104.24800",
        )
}

fn inf_fixture(rel: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/inf")
        .join(rel);
    String::from_utf8(std::fs::read(p).expect("fixture")).expect("utf8")
}

fn package(root: &Path, name: &str, inf_text: &str, files: &[&str]) {
    let d = root.join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::write(d.join(format!("{name}.inf")), inf_text).expect("write");
    for f in files {
        std::fs::write(d.join(f), format!("fake {f}")).expect("write");
    }
}

struct Case {
    _dir: tempfile::TempDir,
    root: PathBuf,
    drivers: PathBuf,
    install: WindowsInstall,
    before: Vec<String>,
}

fn setup(hive: &str, logs: bool) -> Case {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("vol");
    let cfg = root.join("Windows/System32/config");
    std::fs::create_dir_all(&cfg).expect("mkdir");
    std::fs::create_dir_all(root.join("Windows/System32/drivers")).expect("mkdir");
    std::fs::create_dir_all(root.join("Windows/INF")).expect("mkdir");
    std::fs::write(cfg.join("SYSTEM"), regipy(hive)).expect("write");
    if logs {
        std::fs::write(cfg.join("SYSTEM.LOG1"), regipy(&format!("{hive}.LOG1"))).expect("write");
        std::fs::write(cfg.join("SYSTEM.LOG2"), regipy(&format!("{hive}.LOG2"))).expect("write");
    }
    // Baseline for the diff: the hive as Windows would see it (logs replayed), read by hivex.
    let mut base = Hive::open(&cfg.join("SYSTEM")).expect("open");
    let baseline = dir.path().join("baseline");
    base.save(&baseline).expect("save");
    let before = hivex_dump(&baseline);
    let install = find_installations(&root).expect("found").remove(0);
    let drivers = dir.path().join("drivers");
    Case {
        _dir: dir,
        root,
        drivers,
        install,
        before,
    }
}

fn controllers(names: &[&str]) -> Vec<Controller> {
    names
        .iter()
        .flat_map(|n| profile(n).expect("profile"))
        .collect()
}

/// Apply and check: backup kept, header valid, hivex export == model(before + plan).
fn apply_and_verify(case: &Case, plan: &Plan) -> Vec<String> {
    let original = std::fs::read(&case.install.system_hive).expect("read");
    let report = apply(plan).expect("apply");
    assert_eq!(
        std::fs::read(&report.backup).expect("backup"),
        original,
        "backup is the untouched hive"
    );
    let after_bytes = std::fs::read(&case.install.system_hive).expect("read");
    assert_eq!(
        hive::rd_u32(&after_bytes, 508),
        Some(hive::header_checksum(&after_bytes))
    );
    assert_eq!(
        hive::rd_u32(&after_bytes, 4),
        hive::rd_u32(&after_bytes, 8),
        "clean after write"
    );
    assert!(
        hive::rd_u32(&after_bytes, 4) > hive::rd_u32(&original, 4).max(hive::rd_u32(&original, 8))
    );
    let after = hivex_dump(&case.install.system_hive);
    let mut model = Model::from_dump(&case.before);
    model.apply(plan);
    let want = model.lines();
    let got: BTreeSet<String> = after.iter().cloned().collect();
    let missing: Vec<_> = want.difference(&got).take(10).collect();
    let extra: Vec<_> = got.difference(&want).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nextra {extra:?}"
    );
    assert_eq!(got.len(), after.len(), "no duplicate keys");
    Hive::open(&case.install.system_hive)
        .expect("reopen")
        .check()
        .expect("consistent");
    for a in &plan.actions {
        if let Action::CopyFile { to, .. } = a {
            assert!(to.is_file(), "{}", to.display());
        }
    }
    after
}

fn has(after: &[String], line: &str) -> bool {
    let u = line.to_uppercase();
    after.iter().any(|l| l.to_uppercase() == u)
}

fn dword(path: &str, name: &str, v: u32) -> String {
    crate::testutil::vline(path, name, 4, &v.to_le_bytes())
}

#[test]
fn win7_enable_ahci_in_both_control_sets() {
    let case = setup("SYSTEM", false);
    let opts = Options {
        controllers: controllers(&["ahci"]),
        timestamp: Some("T1".into()),
        ..Default::default()
    };
    let plan = plan(&case.install, &opts).expect("plan");
    assert!(
        matches!(&plan.decisions[0].inbox, Some(Choice::Inbox { service, via, .. }) if service == "msahci" && via == "CriticalDeviceDatabase")
    );
    assert_eq!(plan.actions.len(), 2, "{plan}");
    let text = plan.to_string();
    assert!(
        text.contains(
            "set     HKLM\\SYSTEM\\ControlSet002\\Services\\msahci : Start = REG_DWORD 0x0"
        ),
        "{text}"
    );
    let after = apply_and_verify(&case, &plan);
    assert!(has(
        &after,
        &dword("ControlSet001\\services\\msahci", "Start", 0)
    ));
    assert!(has(
        &after,
        &dword("ControlSet002\\services\\msahci", "Start", 0)
    ));
    assert!(plan.backup.ends_with("SYSTEM.rescue-bak-T1"));
}

#[test]
fn win81_and_win10_enable_nvme_removing_start_override() {
    for (hive, logs) in [("SYSTEM_2", false), ("SYSTEM_B", true)] {
        let case = setup(hive, logs);
        let opts = Options {
            controllers: controllers(&["nvme", "ahci"]),
            timestamp: Some("T1".into()),
            ..Default::default()
        };
        let plan = plan(&case.install, &opts).expect("plan");
        assert!(
            matches!(&plan.decisions[0].inbox, Some(Choice::Inbox { service, via, .. }) if service == "stornvme" && via.starts_with("DriverDatabase")),
            "{plan}"
        );
        assert!(
            matches!(&plan.decisions[1].inbox, Some(Choice::Inbox { service, .. }) if service == "storahci")
        );
        assert!(plan.actions.contains(&Action::DeleteKey {
            key: "ControlSet001\\Services\\stornvme\\StartOverride".into(),
            reason: "StartOverride keeps the driver disabled on Windows 8+".into()
        }));
        if logs {
            assert!(
                plan.warnings
                    .iter()
                    .any(|w| w.contains("partial reconcile")),
                "{:?}",
                plan.warnings
            );
        } else {
            assert!(
                plan.warnings
                    .iter()
                    .any(|w| w.contains("no transaction logs")),
                "{:?}",
                plan.warnings
            );
        }
        let after = apply_and_verify(&case, &plan);
        assert!(
            !after.iter().any(|l| l
                .to_uppercase()
                .starts_with("CONTROLSET001\\SERVICES\\STORNVME\\STARTOVERRIDE")),
            "{hive}"
        );
        assert!(has(
            &after,
            &dword("ControlSet001\\Services\\stornvme", "Start", 0)
        ));
        let storahci_override = after.iter().any(|l| {
            l.to_uppercase()
                .starts_with("CONTROLSET001\\SERVICES\\STORAHCI\\STARTOVERRIDE")
        });
        assert!(
            !storahci_override,
            "{hive}: storahci StartOverride removed too"
        );
    }
}

fn third_party_controllers() -> Vec<Controller> {
    let mut c = controllers(&["virtio"]);
    c.extend(profile("PCI\\VEN_1000&DEV_0020").expect("explicit"));
    c
}

#[test]
fn win7_inject_viostor_vioscsi_lsi_u3_via_cddb() {
    let case = setup("SYSTEM", false);
    package(
        &case.drivers,
        "viostor",
        &stamp(&inf_fixture("virtio-win/viostor.inx"), "NTx86", 12),
        &["viostor.sys", "viostor.cat"],
    );
    package(
        &case.drivers,
        "vioscsi",
        &stamp(&inf_fixture("virtio-win/vioscsi.inx"), "NTx86", 12),
        &["vioscsi.sys", "vioscsi.cat"],
    );
    package(
        &case.drivers,
        "lsi_u3",
        &inf_fixture("windows-driver-samples/lsi_u3.inf"),
        &["lsi_u3.sys"],
    );
    // An unusable template next to them is reported, not used.
    std::fs::write(
        case.drivers.join("viostor/template.inf"),
        inf_fixture("virtio-win/viostor.inx"),
    )
    .expect("write");
    let opts = Options {
        controllers: third_party_controllers(),
        driver_dirs: vec![case.drivers.clone()],
        timestamp: Some("T2".into()),
        ..Default::default()
    };
    let plan = plan(&case.install, &opts).expect("plan");
    let services: Vec<&str> = plan
        .decisions
        .iter()
        .filter_map(|d| match &d.third_party {
            Some(Choice::ThirdParty { service, .. }) => Some(service.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        services,
        ["viostor", "viostor", "vioscsi", "vioscsi", "LSI_U3"],
        "{plan}"
    );
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("template.inf") && w.contains("INX_")),
        "{:?}",
        plan.warnings
    );
    assert!(plan
        .warnings
        .iter()
        .any(|w| w.contains("lsi_u3.inf") && w.contains("NT$ARCH$")));
    let after = apply_and_verify(&case, &plan);
    for cs in ["ControlSet001", "ControlSet002"] {
        let svc = format!("{cs}\\services\\viostor");
        assert!(has(&after, &dword(&svc, "Start", 0)));
        assert!(has(&after, &dword(&svc, "Type", 1)));
        assert!(has(
            &after,
            &crate::testutil::vline(
                &svc,
                "ImagePath",
                2,
                &hive::sz("System32\\drivers\\viostor.sys")
            )
        ));
        assert!(has(
            &after,
            &crate::testutil::vline(&svc, "Group", 1, &hive::sz("SCSI miniport"))
        ));
        assert!(has(
            &after,
            &dword(&format!("{svc}\\Parameters\\PnpInterface"), "5", 1)
        ));
        assert!(has(
            &after,
            &dword(&format!("{cs}\\services\\LSI_U3\\Parameters"), "BusType", 1)
        ));
        let cddb = format!(
            "{cs}\\Control\\CriticalDeviceDatabase\\PCI#VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00"
        );
        assert!(has(
            &after,
            &crate::testutil::vline(&cddb, "Service", 1, &hive::sz("viostor"))
        ));
        assert!(has(
            &after,
            &crate::testutil::vline(
                &cddb,
                "ClassGUID",
                1,
                &hive::sz("{4D36E97B-E325-11CE-BFC1-08002BE10318}")
            )
        ));
        assert!(has(
            &after,
            &format!("{cs}\\Control\\CriticalDeviceDatabase\\PCI#VEN_1000&DEV_0020")
        ));
    }
    assert!(case
        .root
        .join("Windows/System32/drivers/viostor.sys")
        .is_file());
    assert!(case
        .root
        .join("Windows/System32/drivers/lsi_u3.sys")
        .is_file());
    assert!(
        !after.iter().any(|l| l.starts_with("DriverDatabase")),
        "no DriverDatabase on 7"
    );
}

fn modern_inject(hive: &str, logs: bool, build_decoration: &str) -> (Case, Plan, Vec<String>) {
    let case = setup(hive, logs);
    package(
        &case.drivers,
        "viostor",
        &stamp(&inf_fixture("virtio-win/viostor.inx"), build_decoration, 12),
        &["viostor.sys", "viostor.cat"],
    );
    if hive == "SYSTEM_B" {
        // The real Win11-stamped INF: NTamd64.10.0...16299 and DIRID 13.
        package(
            &case.drivers,
            "vioscsi",
            &inf_fixture("virtio-win/vioscsi.w11-amd64.stamped.inf"),
            &["vioscsi.sys", "vioscsi.cat"],
        );
    } else {
        package(
            &case.drivers,
            "vioscsi",
            &stamp(&inf_fixture("virtio-win/vioscsi.inx"), build_decoration, 13),
            &["vioscsi.sys", "vioscsi.cat"],
        );
    }
    package(
        &case.drivers,
        "lsi_u3",
        &inf_fixture("windows-driver-samples/lsi_u3.inf"),
        &["lsi_u3.sys", "lsi_u3.cat"],
    );
    let opts = Options {
        controllers: third_party_controllers(),
        driver_dirs: vec![case.drivers.clone()],
        timestamp: Some("T3".into()),
        ..Default::default()
    };
    let plan = plan(&case.install, &opts).expect("plan");
    if std::env::var_os("RESCUE_PRINT_PLAN").is_some() {
        eprintln!("{plan}");
    }
    let after = apply_and_verify(&case, &plan);
    (case, plan, after)
}

fn check_driver_database(case: &Case, plan: &Plan, after: &[String], arch: u16) {
    let h = Hive::open(&case.install.system_hive).expect("open");
    let oems: Vec<String> = after
        .iter()
        .filter(|l| !l.contains('\t') && l.starts_with("DriverDatabase\\DriverInfFiles\\oem"))
        .filter(|l| !case.before.contains(l))
        .cloned()
        .collect();
    assert_eq!(oems.len(), 3, "{oems:?}");
    for o in &oems {
        let oem = o.rsplit('\\').next().expect("name");
        let pkg = h.get_string(o, "Active").expect("read").expect("Active");
        let pk = format!("DriverDatabase\\DriverPackages\\{pkg}");
        assert_eq!(h.get_string(&pk, "").expect("read").as_deref(), Some(oem));
        let v = h
            .value(h.key(&pk).expect("pkg"), "Version")
            .expect("read")
            .expect("Version");
        let pv = PackageVersion::parse(&v.data).expect("48 bytes");
        assert!(!pv.inbox);
        assert_eq!(pv.arch, arch);
        assert_eq!(v.data.len(), 48);
        assert_eq!(
            pv.class_guid,
            guid_bytes("{4D36E97B-E325-11CE-BFC1-08002BE10318}").expect("guid")
        );
        assert!(case.root.join("Windows/INF").join(oem).is_file());
        assert!(case
            .root
            .join("Windows/System32/DriverStore/FileRepository")
            .join(&pkg)
            .is_dir());
    }
    let viostor_pkg = h
        .key("DriverDatabase\\DeviceIds\\PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00")
        .and_then(|k| h.values(k))
        .expect("DeviceIds entry");
    assert_eq!(viostor_pkg.len(), 1);
    assert_eq!(viostor_pkg[0].data, [1, 0xFF, 0, 0]);
    let oem_viostor = &viostor_pkg[0].name;
    let pkg = h
        .get_string(
            &format!("DriverDatabase\\DriverInfFiles\\{oem_viostor}"),
            "Active",
        )
        .expect("read")
        .expect("pkg");
    let pkg_version = PackageVersion::parse(
        &h.value(
            h.key(&format!("DriverDatabase\\DriverPackages\\{pkg}"))
                .expect("k"),
            "Version",
        )
        .expect("r")
        .expect("v")
        .data,
    )
    .expect("v");
    assert_eq!(pkg_version.version, [100, 94, 104, 24800]);
    let d = format!("DriverDatabase\\DriverPackages\\{pkg}\\Descriptors\\PCI\\VEN_1AF4&DEV_1001");
    assert_eq!(
        h.get_string(&d, "Configuration").expect("read").as_deref(),
        Some("scsi_inst")
    );
    assert_eq!(
        h.get_string(
            &format!("DriverDatabase\\DriverPackages\\{pkg}\\Configurations\\scsi_inst"),
            "Service"
        )
        .expect("read")
        .as_deref(),
        Some("viostor")
    );
    assert!(h.open_key(&format!("DriverDatabase\\DriverPackages\\{pkg}\\Configurations\\scsi_inst\\Device\\Interrupt Management\\MessageSignaledInterruptProperties")).expect("read").is_some());
    assert_eq!(
        h.get_string("ControlSet001\\Services\\viostor", "ImagePath")
            .expect("read")
            .as_deref(),
        Some("System32\\drivers\\viostor.sys")
    );
    let img = h
        .get_string("ControlSet001\\Services\\vioscsi", "ImagePath")
        .expect("read")
        .expect("ImagePath");
    assert!(
        img.starts_with("\\SystemRoot\\System32\\DriverStore\\FileRepository\\vioscsi.inf_amd64_")
            && img.ends_with("\\vioscsi.sys"),
        "{img}"
    );
    let rel = img.trim_start_matches("\\SystemRoot\\").replace('\\', "/");
    assert!(
        case.root.join("Windows").join(rel).is_file(),
        "DIRID 13 binary staged where ImagePath points"
    );
    assert_eq!(
        h.get_u32("ControlSet001\\Services\\vioscsi", "Start")
            .expect("read"),
        Some(0)
    );
    assert!(plan
        .to_string()
        .contains("DriverDatabase\\DriverInfFiles\\oem"));
}

#[test]
fn win81_inject_viostor_vioscsi_lsi_u3_via_driver_database() {
    let (case, plan, after) = modern_inject("SYSTEM_2", false, "NTamd64.6.3");
    // OemInfMap was e0 (oem0-2 used): oem3, oem4, oem5 are taken now.
    let h = Hive::open(&case.install.system_hive).expect("open");
    assert_eq!(
        h.value(h.key("DriverDatabase").expect("k"), "OemInfMap")
            .expect("r")
            .expect("v")
            .data,
        [0xFC]
    );
    check_driver_database(&case, &plan, &after, 9);
}

#[test]
fn win10_inject_viostor_vioscsi_lsi_u3_after_log_replay() {
    let (case, plan, after) = modern_inject("SYSTEM_B", true, "NTamd64.10.0");
    let h = Hive::open(&case.install.system_hive).expect("open");
    // OemInfMap was fffc (oem0-13 used): oem14, oem15, oem16.
    assert_eq!(
        h.value(h.key("DriverDatabase").expect("k"), "OemInfMap")
            .expect("r")
            .expect("v")
            .data,
        [0xFF, 0xFF, 0x80]
    );
    check_driver_database(&case, &plan, &after, 9);
    assert!(
        case.install
            .system_hive
            .with_file_name("SYSTEM.rescue-bak-T3.LOG1")
            .is_file(),
        "logs backed up too"
    );
}

#[test]
fn disable_stale_filters_and_plan_serializes() {
    let case = setup("SYSTEM", false);
    // Give the Win7 hive an Intel RST filter to remove.
    let mut h = Hive::open(&case.install.system_hive).expect("open");
    for cs in ["ControlSet001", "ControlSet002"] {
        let k = h
            .create_key(&format!("{cs}\\services\\iaStorF"))
            .expect("create");
        h.set_u32(k, "Start", 0).expect("set");
        let c = h
            .key(&format!(
                "{cs}\\Control\\Class\\{{4D36E967-E325-11CE-BFC1-08002BE10318}}"
            ))
            .expect("class");
        h.set_value(
            c,
            "UpperFilters",
            reg_type::MULTI_SZ,
            &hive::multi_sz(&["iaStorF".into(), "PartMgr".into()]),
        )
        .expect("set");
    }
    h.save(&case.install.system_hive).expect("save");
    let base = case.root.parent().expect("p").join("baseline2");
    std::fs::copy(&case.install.system_hive, &base).expect("copy");
    let case = Case {
        before: hivex_dump(&base),
        ..case
    };
    let opts = Options {
        controllers: controllers(&["ahci"]),
        disable_stale: true,
        timestamp: Some("T4".into()),
        ..Default::default()
    };
    let plan = plan(&case.install, &opts).expect("plan");
    let json = serde_json::to_string(&plan).expect("json");
    assert!(json.contains(r#""op":"set_value","key":"ControlSet001\\Services\\msahci","name":"Start","reg_type":4,"data":"00000000""#), "{json}");
    let back: Plan = serde_json::from_str(&json).expect("roundtrip");
    assert_eq!(back, plan);
    let after = apply_and_verify(&case, &plan);
    assert!(
        matches!(apply(&plan), Err(InjectError::HiveChanged { .. })),
        "a plan applies once"
    );
    assert!(has(
        &after,
        &dword("ControlSet001\\services\\iaStorF", "Start", 4)
    ));
    let c = "ControlSet002\\Control\\Class\\{4D36E967-E325-11CE-BFC1-08002BE10318}";
    assert!(has(
        &after,
        &crate::testutil::vline(c, "UpperFilters", 7, &hive::multi_sz(&["PartMgr".into()]))
    ));
}

#[test]
fn missing_driver_and_missing_file_are_reported() {
    let case = setup("SYSTEM_2", false);
    let opts = Options {
        controllers: controllers(&["vmware"]),
        timestamp: Some("T5".into()),
        ..Default::default()
    };
    let plan = plan(&case.install, &opts).expect("plan");
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("no driver found for VMware PVSCSI")),
        "{:?}",
        plan.warnings
    );
    package(
        &case.drivers,
        "viostor",
        &stamp(&inf_fixture("virtio-win/viostor.inx"), "NTamd64", 12),
        &[],
    );
    let opts = Options {
        controllers: controllers(&["virtio"]),
        driver_dirs: vec![case.drivers.clone()],
        ..Default::default()
    };
    let e = super::plan(&case.install, &opts).expect_err("sys missing");
    assert!(
        matches!(&e, InjectError::MissingFile { file, .. } if file == "viostor.sys"),
        "{e}"
    );
    assert!(e.hint().contains(".sys"));
}

#[test]
fn dates_and_guids() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(days_from_civil(2024, 2, 25), 19778);
    // 2008-06-12 as FILETIME (python: (datetime(2008,6,12)-datetime(1601,1,1)) in 100 ns).
    assert_eq!(driver_date_filetime((2008, 6, 12)), 128_577_024_000_000_000);
    assert_eq!(
        guid_bytes("{4D36E97B-E325-11CE-BFC1-08002BE10318}").expect("guid"),
        [
            0x7b, 0xe9, 0x36, 0x4d, 0x25, 0xe3, 0xce, 0x11, 0xbf, 0xc1, 0x08, 0x00, 0x2b, 0xe1,
            0x03, 0x18
        ]
    );
}
