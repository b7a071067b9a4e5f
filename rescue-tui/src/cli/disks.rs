//! `rescue disks`.

use super::{print_json, show, CliError, DisksArgs, Global, HardwareArgs};

/// `rescue hardware`: the controllers without a driver (or every device).
pub fn hardware(g: &Global, a: HardwareArgs) -> Result<(), CliError> {
    let all = imaging::hardware::pci_devices(&imaging::hardware::sysfs_root());
    let list: Vec<_> = all.iter().filter(|d| a.all || (d.driver.is_none() && d.matters())).collect();
    if g.json {
        return print_json(&list);
    }
    if all.is_empty() {
        println!("no PCI devices found (no PCI bus, or /sys is not mounted)");
        return Ok(());
    }
    if list.is_empty() {
        println!("every storage, network and USB controller has a driver ({} PCI devices; --all lists them)", all.len());
        return Ok(());
    }
    for d in list {
        let driver = match &d.driver {
            Some(dr) => dr.clone(),
            None if d.matters() => "NO DRIVER: its disks or network cannot appear".into(),
            None => "no driver".into(),
        };
        println!("{}  {driver}", d.describe());
    }
    Ok(())
}

pub fn run(g: &Global, a: DisksArgs) -> Result<(), CliError> {
    let list = imaging::inventory::list(&a.files);
    if g.json {
        let v: Vec<serde_json::Value> = list
            .iter()
            .map(|r| match r {
                Ok(d) => serde_json::to_value(d).unwrap_or(serde_json::Value::Null),
                Err((p, e)) => serde_json::json!({"path": p, "error": e.to_string()}),
            })
            .collect();
        return print_json(&v);
    }
    if list.is_empty() {
        eprintln!("no disks found (are you root? is /sys mounted?)");
    }
    for r in &list {
        match r {
            Ok(d) => println!("{}", show::disk(d)),
            Err((p, e)) => println!("{}: {e}\n", p.display()),
        }
    }
    Ok(())
}
