//! `rescue hardware`: the PCI devices of this machine as sysfs has them, and
//! a controller without a driver named (on a sysfs tree made for the test).

mod common;

use std::process::Command;

use common::*;

#[test]
fn lists_this_machines_pci_devices_with_their_drivers() {
    let v: serde_json::Value = serde_json::from_str(&rescue_ok(&["hardware", "--all", "--json"])).expect("json");
    let listed = v.as_array().expect("a list");
    let mut want: Vec<(String, Option<String>)> = std::fs::read_dir("/sys/bus/pci/devices")
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let driver = std::fs::read_link(e.path().join("driver")).ok().and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()));
                    (e.file_name().to_string_lossy().into_owned(), driver)
                })
                .collect()
        })
        .unwrap_or_default();
    want.sort();
    let got: Vec<(String, Option<String>)> =
        listed.iter().map(|d| (d["slot"].as_str().expect("slot").to_string(), d["driver"].as_str().map(str::to_string))).collect();
    assert_eq!(got, want);
}

#[test]
fn a_controller_without_a_driver_is_named() {
    let t = tempfile::tempdir().expect("tmp");
    let d = t.path().join("bus/pci/devices/0000:03:00.0");
    std::fs::create_dir_all(&d).expect("mkdir");
    for (f, v) in [("class", "0x010802"), ("vendor", "0x144d"), ("device", "0xa808"), ("modalias", "pci:v0000144Dd0000A808sv")] {
        std::fs::write(d.join(f), format!("{v}\n")).expect("write");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_rescue")).arg("hardware").env("RESCUE_SYSFS", t.path()).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("[144d:a808] NVMe controller at 0000:03:00.0  NO DRIVER"), "{text}");
}
