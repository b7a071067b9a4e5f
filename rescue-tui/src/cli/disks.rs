//! `rescue disks`.

use super::{print_json, show, CliError, DisksArgs, Global};

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
